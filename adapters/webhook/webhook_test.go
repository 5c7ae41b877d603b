package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/webhook"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/notify"
)

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"d1","type":"job.completed"}`)
	ts := strconv.FormatInt(now.Unix(), 10)
	good := webhook.Sign("whsec_k", now.Unix(), body)
	cases := []struct {
		name      string
		secret    string
		timestamp string
		signature string
		body      []byte
		want      error
	}{
		{"valid", "whsec_k", ts, good, body, nil},
		{"one of several signatures", "whsec_k", ts, "v1=00ff, " + good, body, nil},
		{"the wrong secret", "whsec_other", ts, good, body, webhook.ErrBadSignature},
		{"a changed body", "whsec_k", ts, good, []byte(`{"id":"d1","type":"job.failed"}`), webhook.ErrBadSignature},
		{"another timestamp than the signed one", "whsec_k", strconv.FormatInt(now.Unix()-1, 10), good, body, webhook.ErrBadSignature},
		{"a signature that is not hex", "whsec_k", ts, "v1=zz", body, webhook.ErrBadSignature},
		{"an unknown scheme only", "whsec_k", ts, "v0=" + strings.TrimPrefix(good, "v1="), body, webhook.ErrNoSignature},
		{"no signature", "whsec_k", ts, "", body, webhook.ErrNoSignature},
		{"no timestamp", "whsec_k", "", good, body, webhook.ErrNoSignature},
		{"a timestamp that is no number", "whsec_k", "yesterday", good, body, webhook.ErrStaleTimestamp},
		{"too old: a replay", "whsec_k", strconv.FormatInt(now.Add(-6*time.Minute).Unix(), 10),
			webhook.Sign("whsec_k", now.Add(-6*time.Minute).Unix(), body), body, webhook.ErrStaleTimestamp},
		{"too far in the future", "whsec_k", strconv.FormatInt(now.Add(6*time.Minute).Unix(), 10),
			webhook.Sign("whsec_k", now.Add(6*time.Minute).Unix(), body), body, webhook.ErrStaleTimestamp},
		{"old but within tolerance", "whsec_k", strconv.FormatInt(now.Add(-4*time.Minute).Unix(), 10),
			webhook.Sign("whsec_k", now.Add(-4*time.Minute).Unix(), body), body, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.VerifyAt(c.secret, c.timestamp, c.signature, c.body, 0, now)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("VerifyAt: %v, want %v", err, c.want)
			}
		})
	}
	// The signature is HMAC-SHA256 over "timestamp.body", in hex (the value computed with another tool).
	if got := webhook.Sign("key", 1, []byte("body")); got != "v1=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5" {
		t.Fatalf("Sign = %s", got)
	}
}

// env is a webhook receiver and the notifier's pieces on a real SQLite job store.
type env struct {
	store     *jobstore.SQLite
	webhooks  *jobstore.Webhooks
	svc       *notify.Service
	proj      *notify.Projection
	secret    string
	hook      notify.Webhook
	requests  chan received
	events    int
	tenant    string
	cfg       notify.DelivererConfig
	senderCfg webhook.Config
}

// received is one request the receiver saw, checked.
type received struct {
	verifyErr error
	payload   webhook.Payload
	header    http.Header
	body      string
}

// newEnv starts a receiver that checks every request with Verify and answers through respond.
func newEnv(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, n int)) *env {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "jobmill.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	st, err := jobstore.NewSQLite(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	hooks, err := jobstore.NewWebhooks(st)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{store: st, webhooks: hooks, requests: make(chan received, 100), tenant: "acme",
		cfg: notify.DelivererConfig{PollInterval: 5 * time.Millisecond, Concurrency: 4, MaxAttempts: 3,
			BackoffBase: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond, RequestTimeout: 5 * time.Second}}
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Error(err)
			return
		}
		rec := received{header: r.Header.Clone(), body: string(body)}
		rec.verifyErr = webhook.Verify(e.secret, r.Header.Get(webhook.HeaderTimestamp), r.Header.Get(webhook.HeaderSignature), body, time.Minute)
		if err := json.Unmarshal(body, &rec.payload); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		e.requests <- rec
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		respond(w, r, i)
	}))
	t.Cleanup(srv.Close)
	if e.svc, err = notify.NewService(hooks, time.Now); err != nil {
		t.Fatal(err)
	}
	if e.hook, e.secret, err = e.svc.CreateWebhook(ctx, e.tenant, srv.URL+"/hooks/jobmill", []string{"job.completed", "job.started"}); err != nil {
		t.Fatal(err)
	}
	if e.proj, err = notify.NewProjection(hooks, st, time.Now, quiet()); err != nil {
		t.Fatal(err)
	}
	return e
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// apply feeds the notifier one event, as the log consumer does.
func (e *env) apply(t *testing.T, ev job.Message) {
	t.Helper()
	e.events++
	if err := e.proj.Apply(context.Background(), "event-"+strconv.Itoa(e.events), ev); err != nil {
		t.Fatalf("Apply %T: %v", ev, err)
	}
}

// run starts the deliverer with the HTTP sender until the test ends.
func (e *env) run(t *testing.T) {
	t.Helper()
	sender := webhook.NewSender(e.senderCfg)
	t.Cleanup(sender.Close)
	d, err := notify.NewDeliverer(e.webhooks, sender, e.cfg, time.Now, quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func (e *env) deliveries(t *testing.T) []notify.Delivery {
	t.Helper()
	ds, err := e.svc.Deliveries(context.Background(), e.tenant, e.hook.ID, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (e *env) only(t *testing.T) notify.Delivery {
	t.Helper()
	ds := e.deliveries(t)
	if len(ds) != 1 {
		t.Fatalf("%d deliveries, want 1", len(ds))
	}
	return ds[0]
}

func TestRetriesAfterServerErrorsThenDelivers(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, _ *http.Request, n int) {
		if n <= 2 {
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	e.createJob(t, "job-1")
	start := time.Now()
	e.apply(t, job.JobCompleted{JobID: "job-1", Seq: 9, At: start, Counts: job.Counts{Total: 3, Succeeded: 3}})
	// Not subscribed to: no delivery.
	e.apply(t, job.JobFailed{JobID: "job-1", At: start})
	e.run(t)
	waitFor(t, "the delivery", func() bool { return e.only(t).State == notify.DeliveryDelivered })

	d := e.only(t)
	if d.Attempts != 3 || d.LastStatusCode != http.StatusNoContent || d.LastError != "" {
		t.Fatalf("delivered: %+v", d)
	}
	var reqs []received
	for range 3 {
		reqs = append(reqs, <-e.requests)
	}
	select {
	case r := <-e.requests:
		t.Fatalf("a fourth request: %+v", r)
	default:
	}
	for i, r := range reqs {
		if r.verifyErr != nil {
			t.Fatalf("request %d: signature: %v", i, r.verifyErr)
		}
		if got := r.header.Get(webhook.HeaderDelivery); got != d.ID {
			t.Fatalf("request %d: delivery header %q, want %q", i, got, d.ID)
		}
		if r.header.Get(webhook.HeaderEvent) != "job.completed" || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %d: headers %v", i, r.header)
		}
		if r.body != reqs[0].body {
			t.Fatalf("request %d: the body changed between attempts:\n%s\n%s", i, r.body, reqs[0].body)
		}
	}
	p := reqs[0].payload
	if p.ID != d.ID || p.Type != "job.completed" || p.JobID != "job-1" || p.Tenant != "acme" || p.Step != 0 ||
		!p.At.Equal(start.Truncate(time.Microsecond)) {
		t.Fatalf("payload %+v", p)
	}
	var data struct {
		Seq    int64      `json:"seq"`
		Counts job.Counts `json:"counts"`
	}
	if err := json.Unmarshal(p.Data, &data); err != nil || data.Seq != 9 || data.Counts.Succeeded != 3 {
		t.Fatalf("data %s: %+v, %v", p.Data, data, err)
	}
	if strings.Contains(reqs[0].body, `"step"`) {
		t.Fatalf("a job notification carries a step: %s", reqs[0].body)
	}
}

func TestDeadLetterAfterMaxAttempts(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, _ *http.Request, _ int) {
		http.Error(w, "database on fire", http.StatusInternalServerError)
	})
	e.apply(t, job.JobStarted{JobID: "job-1", Tenant: "acme", Type: "invoices", At: time.Now()})
	e.run(t)
	waitFor(t, "the delivery to be dead", func() bool { return e.only(t).State == notify.DeliveryDead })
	d := e.only(t)
	if d.Attempts != 3 || d.LastStatusCode != 500 || d.LastError != "HTTP 500: database on fire" || !d.NextAttemptAt.IsZero() {
		t.Fatalf("dead: %+v", d)
	}
	for range 3 {
		if r := <-e.requests; r.verifyErr != nil || r.payload.Type != "job.started" {
			t.Fatalf("request: %+v", r)
		}
	}
	dead, err := e.svc.Deliveries(context.Background(), "acme", e.hook.ID, notify.DeliveryDead, 10)
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead-letter listing: %+v, %v", dead, err)
	}
	// Redelivery starts again with a fresh budget: three more attempts.
	if _, err := e.svc.Redeliver(context.Background(), "acme", d.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the redelivery to be dead", func() bool {
		d := e.only(t)
		return d.State == notify.DeliveryDead && d.UpdatedAt.After(dead[0].UpdatedAt)
	})
	for range 3 {
		<-e.requests
	}
	if d := e.only(t); d.Attempts != 3 {
		t.Fatalf("after redelivery: %+v", d)
	}
}

func TestHangingReceiverTimesOutWithoutHoldingUpEvents(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	e.cfg.RequestTimeout = 100 * time.Millisecond
	e.cfg.MaxAttempts = 50
	e.createJob(t, "job-2")
	e.apply(t, job.JobStarted{JobID: "job-1", Tenant: "acme", Type: "invoices", At: time.Now()})
	e.run(t)
	<-e.requests // an attempt is hanging now

	// New events are recorded while the receiver hangs.
	applied := make(chan struct{})
	go func() {
		defer close(applied)
		e.apply(t, job.JobStarted{JobID: "job-2", Tenant: "acme", Type: "invoices", At: time.Now()})
		// Its tenant comes from the job store.
		e.apply(t, job.JobCompleted{JobID: "job-2", At: time.Now()})
	}()
	select {
	case <-applied:
	case <-time.After(20 * time.Second):
		t.Fatal("Apply waited for the receiver")
	}
	if n := len(e.deliveries(t)); n != 3 {
		t.Fatalf("%d deliveries recorded, want 3", n)
	}

	waitFor(t, "job-1's delivery to be retried after a time-out", func() bool {
		for _, d := range e.deliveries(t) {
			if d.JobID == "job-1" && d.Attempts >= 2 && d.LastError == "no response within 100ms" && d.LastStatusCode == 0 &&
				d.State == notify.DeliveryPending {
				return true
			}
		}
		return false
	})
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var mu sync.Mutex
	elsewhere := 0
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		elsewhere++
		mu.Unlock()
	}))
	defer other.Close()
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
	})
	e.cfg.MaxAttempts = 1
	// An event of a job the store does not know is dropped.
	e.apply(t, job.JobCompleted{JobID: "job-1", At: time.Now()})
	if n := len(e.deliveries(t)); n != 0 {
		t.Fatalf("%d deliveries for an unknown job", n)
	}
	e.createJob(t, "job-1")
	e.apply(t, job.JobCompleted{JobID: "job-1", At: time.Now()})
	e.run(t)
	waitFor(t, "the delivery to be dead", func() bool { return e.only(t).State == notify.DeliveryDead })
	d := e.only(t)
	if d.LastStatusCode != http.StatusTemporaryRedirect || !strings.Contains(d.LastError, "HTTP 307 (redirect to "+other.URL+"/steal not followed)") {
		t.Fatalf("redirected: %+v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if elsewhere != 0 {
		t.Fatalf("the redirect was followed %d times", elsewhere)
	}
}

// createJob stores a job of the env's tenant, for events that do not carry the tenant.
func (e *env) createJob(t *testing.T, jobID string) {
	t.Helper()
	j, fx, err := job.New(jobID, e.tenant, "invoices", []byte(`{}`), job.DefaultPolicy(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = e.store.Update(context.Background(), func(ctx context.Context, tx job.Tx) error {
		if _, err := tx.CreateJob(ctx, j, ""); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSenderErrors(t *testing.T) {
	long := strings.Repeat("x", 2000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: only then does the server notice a client that hangs up.
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/long":
			http.Error(w, long, http.StatusBadGateway)
		case "/binary":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte{0xff, 0xfe, 'o', 'k'})
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		}
	}))
	defer srv.Close()
	d := notify.Delivery{ID: "d1", Notification: notify.Notification{Type: notify.TypeJobCompleted, JobID: "j", Tenant: "acme", At: time.Now()}}
	target := func(path string) notify.Target {
		return notify.Target{URL: srv.URL + path + "?token=in-the-url", Secret: "whsec_k"}
	}
	ctx := context.Background()

	s := webhook.NewSender(webhook.Config{Timeout: 50 * time.Millisecond})
	defer s.Close()
	status, err := s.Send(ctx, target("/long"), d)
	if status != http.StatusBadGateway || err == nil || len(err.Error()) > 600 || !strings.HasPrefix(err.Error(), "HTTP 502: xxx") {
		t.Fatalf("long answer: %d, %v", status, err)
	}
	status, err = s.Send(ctx, target("/binary"), d)
	if status != http.StatusBadRequest || err == nil || err.Error() != "HTTP 400: ?ok" {
		t.Fatalf("binary answer: %d, %v", status, err)
	}
	status, err = s.Send(ctx, target("/slow"), d)
	if status != 0 || err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("slow answer: %d, %v", status, err)
	}
	if strings.Contains(err.Error(), "in-the-url") {
		t.Fatalf("the error shows the url: %v", err)
	}
	status, err = s.Send(ctx, notify.Target{URL: "http://127.0.0.1:1/x", Secret: "k"}, d)
	if status != 0 || err == nil || !strings.HasPrefix(err.Error(), "request failed: ") {
		t.Fatalf("nobody listening: %d, %v", status, err)
	}
}

func TestSenderRefusesInternalAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	d := notify.Delivery{ID: "d1", Notification: notify.Notification{Type: notify.TypeJobCompleted, JobID: "j", At: time.Now()}}
	ctx := context.Background()
	cases := []struct {
		name    string
		block   bool
		url     string
		refused bool
	}{
		{"loopback allowed by default", false, srv.URL, false},
		{"loopback refused when private networks are blocked", true, srv.URL, true},
		{"a metadata service is always refused", false, "http://169.254.169.254/latest/meta-data", true},
		{"the unspecified address is always refused", false, "http://0.0.0.0:1/", true},
		{"IPv6 link-local is always refused", false, "http://[fe80::1]:80/", true},
		{"a private network refused when blocked", true, "http://10.0.0.1:1/", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := webhook.NewSender(webhook.Config{BlockPrivateNetworks: c.block, Timeout: 2 * time.Second})
			defer s.Close()
			_, err := s.Send(ctx, notify.Target{URL: c.url, Secret: "k"}, d)
			refused := err != nil && strings.Contains(err.Error(), "is not allowed for webhooks")
			if refused != c.refused || (!c.refused && err != nil) {
				t.Fatalf("Send: %v (refused %v, want %v)", err, refused, c.refused)
			}
		})
	}
}

func TestVerifyRequest(t *testing.T) {
	body := []byte(`{"id":"d1"}`)
	now := time.Now()
	req := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(string(body)))
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign("whsec_k", now.Unix(), body))
	got, err := webhook.VerifyRequest(req, "whsec_k", 0, 0)
	if err != nil || string(got) != string(body) {
		t.Fatalf("VerifyRequest: %q, %v", got, err)
	}
	big := httptest.NewRequest(http.MethodPost, "/hook", strings.NewReader(strings.Repeat("x", 100)))
	if _, err := webhook.VerifyRequest(big, "whsec_k", 0, 10); err == nil || !strings.Contains(err.Error(), "larger than 10 bytes") {
		t.Fatalf("a body over the limit: %v", err)
	}
}
