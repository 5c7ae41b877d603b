package notify_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/notify"
)

func newService(t *testing.T, store notify.Store) *notify.Service {
	t.Helper()
	svc, err := notify.NewService(store, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestCreateWebhookValidation(t *testing.T) {
	cases := []struct {
		name     string
		tenant   string
		url      string
		types    []string
		wantURL  string
		wantType []notify.Type
		wantErr  string // empty: accepted
	}{
		{"https with path and query", "acme", "https://hooks.example.com/jobmill?team=7", nil,
			"https://hooks.example.com/jobmill?team=7", nil, ""},
		{"http with a port, spaces trimmed", "acme", "  http://localhost:8080/in ", nil, "http://localhost:8080/in", nil, ""},
		{"types filtered, repeats dropped, spaces trimmed", "acme", "https://h.example", []string{"job.completed", " job.failed", "job.completed"},
			"https://h.example", []notify.Type{notify.TypeJobCompleted, notify.TypeJobFailed}, ""},
		{"every type by name", "acme", "https://h.example",
			[]string{"job.started", "step.started", "step.finished", "job.completed", "job.failed", "job.cancelled"},
			"https://h.example", notify.Types(), ""},
		{"empty url", "acme", " ", nil, "", nil, "url is required"},
		{"another scheme", "acme", "ftp://h.example/x", nil, "", nil, `must start with http:// or https:// (got "ftp:")`},
		{"no scheme", "acme", "h.example/x", nil, "", nil, "must start with http:// or https://"},
		{"no host", "acme", "https:///path", nil, "", nil, "url has no host"},
		{"a port without a host", "acme", "http://:8080/x", nil, "", nil, "url has no host"},
		{"credentials", "acme", "https://user:pass@h.example/", nil, "", nil, "must not contain a user name or password"},
		{"a fragment", "acme", "https://h.example/#x", nil, "", nil, "must not contain a fragment"},
		{"too long", "acme", "https://h.example/" + strings.Repeat("a", notify.MaxURLLength), nil, "", nil, "longer than 2048"},
		{"does not parse", "acme", "https://h.example/%zz", nil, "", nil, "does not parse"},
		{"unknown type", "acme", "https://h.example", []string{"job.exploded"}, "", nil,
			`unknown event type "job.exploded" (known: job.started, step.started, step.finished, job.completed, job.failed, job.cancelled)`},
		{"a type in the wrong case", "acme", "https://h.example", []string{"JOB.COMPLETED"}, "", nil, `unknown event type "JOB.COMPLETED"`},
		{"invalid tenant", "", "https://h.example", nil, "", nil, "invalid tenant name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store := newMemStore()
			svc := newService(t, store)
			w, secret, err := svc.CreateWebhook(context.Background(), c.tenant, c.url, c.types)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				if c.tenant != "" && !errors.Is(err, notify.ErrInvalid) {
					t.Fatalf("error %v is not ErrInvalid", err)
				}
				if len(store.webhooks) != 0 {
					t.Fatal("a refused webhook was stored")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if w.URL != c.wantURL || !reflect.DeepEqual(w.EventTypes, c.wantType) || w.Tenant != c.tenant || !w.CreatedAt.Equal(t0) || w.ID == "" {
				t.Fatalf("webhook %+v", w)
			}
			stored, err := store.Webhook(context.Background(), c.tenant, w.ID)
			if err != nil || !reflect.DeepEqual(stored, w) {
				t.Fatalf("stored %+v, %v; returned %+v", stored, err, w)
			}
			if string(store.secrets[w.ID]) != secret {
				t.Fatal("the stored secret is not the one returned")
			}
		})
	}
}

func TestWebhookSecrets(t *testing.T) {
	svc := newService(t, newMemStore())
	seen := map[string]bool{}
	for range 3 {
		_, secret, err := svc.CreateWebhook(context.Background(), "acme", "https://h.example", nil)
		if err != nil {
			t.Fatal(err)
		}
		key, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(secret, notify.SecretPrefix))
		if !strings.HasPrefix(secret, notify.SecretPrefix) || err != nil || len(key) != 32 {
			t.Fatalf("secret %q: want %s and 32 random bytes", secret, notify.SecretPrefix)
		}
		if seen[secret] {
			t.Fatal("two webhooks got the same secret")
		}
		seen[secret] = true
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := notify.Secret("whsec_topsecret")
	c := notify.Claim{Target: notify.Target{URL: "https://h", Secret: s}}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("claimed", "secret", s, "claim", c)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("claimed", "secret", s, "claim", c)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q", c, c, c, s, s), logs.String(), string(js)} {
		if strings.Contains(out, "topsecret") {
			t.Fatalf("the secret shows: %s", out)
		}
	}
	if string(s) != "whsec_topsecret" {
		t.Fatal("the key itself is lost")
	}
}

func TestWebhooksPerTenantAreBounded(t *testing.T) {
	svc := newService(t, newMemStore())
	ctx := context.Background()
	for i := range notify.MaxWebhooksPerTenant {
		if _, _, err := svc.CreateWebhook(ctx, "acme", "https://h.example", nil); err != nil {
			t.Fatalf("webhook %d: %v", i, err)
		}
	}
	if _, _, err := svc.CreateWebhook(ctx, "acme", "https://h.example", nil); !errors.Is(err, notify.ErrInvalid) {
		t.Fatalf("one webhook too many: %v", err)
	}
	if _, _, err := svc.CreateWebhook(ctx, "globex", "https://h.example", nil); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
}

func TestTenantIsolation(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	svc := newService(t, store)
	w, _, err := svc.CreateWebhook(ctx, "acme", "https://h.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.RecordDeliveries(ctx, "acme", []notify.Notification{{Type: notify.TypeJobCompleted, JobID: "j", Tenant: "acme", At: t0}}, t0); err != nil {
		t.Fatal(err)
	}
	ds, err := svc.Deliveries(ctx, "acme", w.ID, "", 0)
	if err != nil || len(ds) != 1 {
		t.Fatalf("acme's deliveries: %v, %v", ds, err)
	}
	d := ds[0]
	store.mu.Lock()
	store.deliveries[d.ID].d.State = notify.DeliveryDead
	store.mu.Unlock()

	checks := map[string]func(tenant string) error{
		"Webhook":       func(tenant string) error { _, err := svc.Webhook(ctx, tenant, w.ID); return err },
		"Deliveries":    func(tenant string) error { _, err := svc.Deliveries(ctx, tenant, w.ID, "", 10); return err },
		"Delivery":      func(tenant string) error { _, err := svc.Delivery(ctx, tenant, d.ID); return err },
		"Redeliver":     func(tenant string) error { _, err := svc.Redeliver(ctx, tenant, d.ID); return err },
		"DeleteWebhook": func(tenant string) error { return svc.DeleteWebhook(ctx, tenant, w.ID) },
	}
	for name, check := range checks {
		for _, other := range []string{"globex", ""} {
			if err := check(other); !errors.Is(err, notify.ErrNotFound) {
				t.Errorf("%s as %q: %v, want not found", name, other, err)
			}
		}
	}
	if ws, err := svc.ListWebhooks(ctx, "globex"); err != nil || len(ws) != 0 {
		t.Errorf("globex lists %v, %v", ws, err)
	}
	if ds, err := svc.Deliveries(ctx, "globex", "", "", 10); err != nil || len(ds) != 0 {
		t.Errorf("globex lists deliveries %v, %v", ds, err)
	}
	// All of it is still acme's.
	if _, err := svc.Redeliver(ctx, "acme", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := svc.DeleteWebhook(ctx, "acme", w.ID); err != nil {
		t.Fatal(err)
	}
	if ds, _ := store.snapshot(); len(ds) != 0 {
		t.Fatalf("deleting a webhook left %d deliveries", len(ds))
	}
}

func TestDeliveriesQuery(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	svc := newService(t, store)
	w, _, err := svc.CreateWebhook(ctx, "acme", "https://h.example", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ns []notify.Notification
	for i := range notify.MaxDeliveryLimit + 10 {
		ns = append(ns, notify.Notification{Type: notify.TypeJobCompleted, JobID: fmt.Sprint(i), Tenant: "acme", At: t0})
	}
	if _, err := store.RecordDeliveries(ctx, "acme", ns, t0); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		state   notify.DeliveryState
		limit   int
		want    int
		wantErr error
	}{
		{"default limit", "", 0, notify.DefaultDeliveryLimit, nil},
		{"limit", "", 7, 7, nil},
		{"limit capped", "", 100_000, notify.MaxDeliveryLimit, nil},
		{"by state", notify.DeliveryPending, 3, 3, nil},
		{"by a state none is in", notify.DeliveryDead, 3, 0, nil},
		{"unknown state", "LOST", 3, 0, notify.ErrInvalid},
		{"negative limit", "", -1, 0, notify.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, err := svc.Deliveries(ctx, "acme", w.ID, c.state, c.limit)
			if !errors.Is(err, c.wantErr) || len(ds) != c.want {
				t.Fatalf("%d deliveries, %v; want %d, %v", len(ds), err, c.want, c.wantErr)
			}
		})
	}
	if _, err := svc.Deliveries(ctx, "acme", "no-such-webhook", "", 0); !errors.Is(err, notify.ErrNotFound) {
		t.Fatalf("deliveries of an unknown webhook: %v", err)
	}
}

func TestRedeliverPendingIsRefused(t *testing.T) {
	ctx := context.Background()
	store, ids := storeWithDeliveries(t, 1)
	svc := newService(t, store)
	if _, err := svc.Redeliver(ctx, "acme", ids[0]); !errors.Is(err, notify.ErrDeliveryPending) {
		t.Fatalf("redelivering a pending delivery: %v", err)
	}
}

func TestLogSender(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	d := notify.Delivery{ID: "d1", WebhookID: "w1", Attempts: 1, Notification: notify.Notification{Type: notify.TypeStepFinished,
		JobID: "j1", Tenant: "acme", Step: 2, At: t0, Data: json.RawMessage(`{"succeeded":3}`)}}
	target := notify.Target{URL: "https://h.example/?token=hidden", Secret: "whsec_topsecret"}

	s, err := notify.NewLogSender(logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if status, err := s.Send(context.Background(), target, d); err != nil || status != 0 {
		t.Fatalf("Send: %d, %v", status, err)
	}
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	want := map[string]any{"level": "INFO", "msg": "notification", "type": "step.finished", "job": "j1", "tenant": "acme",
		"step": 2.0, "delivery": "d1", "webhook": "w1", "data": `{"succeeded":3}`}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("log field %s = %v, want %v", k, line[k], v)
		}
	}
	if strings.Contains(logs.String(), "topsecret") || strings.Contains(logs.String(), "hidden") {
		t.Fatalf("the log shows the secret or the url: %s", logs.String())
	}

	// In addition to another sender, it returns what that one returns.
	next := &scriptedSender{script: []answer{{500, errors.New("HTTP 500")}}}
	both, err := notify.NewLogSender(logger, next)
	if err != nil {
		t.Fatal(err)
	}
	if status, err := both.Send(context.Background(), target, d); status != 500 || err == nil || next.callsOf("d1") != 1 {
		t.Fatalf("Send through: %d, %v, %d calls", status, err, next.callsOf("d1"))
	}
}
