package notify_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/notify"
)

// jobReader is a job store reduced to the tenants of its jobs, counting its reads.
type jobReader struct {
	mu      sync.Mutex
	tenants map[string]string
	err     error
	reads   int
}

func (r *jobReader) GetJob(_ context.Context, id string) (*job.Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	if r.err != nil {
		return nil, r.err
	}
	tenant, ok := r.tenants[id]
	if !ok {
		return nil, fmt.Errorf("job %s: %w", id, job.ErrNotFound)
	}
	return &job.Job{ID: id, Tenant: tenant}, nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newProjection(t *testing.T, store notify.Store, jobs notify.JobReader) *notify.Projection {
	t.Helper()
	p, err := notify.NewProjection(store, jobs, func() time.Time { return t0.Add(time.Hour) }, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// keys lists "webhook key" of each delivery.
func keys(ds []notify.Delivery) []string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, d.WebhookID+" "+d.Key())
	}
	return ks
}

// lifecycle is every event of one job that ran to completion, in log order, with step 1 reported twice.
func lifecycle(jobID, tenant string) []job.Message {
	return []job.Message{
		job.JobStarted{JobID: jobID, Tenant: tenant, Type: "t", Seq: 1, At: t0},
		job.Step1Completed{JobID: jobID, Attempt: 1, Total: 2, At: t0.Add(1 * time.Second)},
		job.Step1Completed{JobID: jobID, Attempt: 1, Total: 2, At: t0.Add(2 * time.Second)},
		job.Step2Started{JobID: jobID, Total: 2, Seq: 2, At: t0.Add(3 * time.Second)},
		job.Step2SubjobCompleted{JobID: jobID, Index: 0, At: t0.Add(4 * time.Second)},
		job.Step2SubjobCompleted{JobID: jobID, Index: 1, At: t0.Add(4 * time.Second)},
		job.Tick{JobID: jobID, At: t0.Add(4 * time.Second)},
		job.Step2Completed{JobID: jobID, Succeeded: 2, Seq: 3, At: t0.Add(5 * time.Second)},
		job.Step3Completed{JobID: jobID, Attempt: 1, At: t0.Add(6 * time.Second)},
		job.JobCompleted{JobID: jobID, Seq: 4, At: t0.Add(7 * time.Second)},
	}
}

var lifecycleKeys = []string{"j/job.started/0", "j/step.started/1", "j/step.finished/1", "j/step.started/2",
	"j/step.finished/2", "j/step.started/3", "j/step.finished/3", "j/job.completed/0"}

func TestProjectionRecordsEachNotificationOnce(t *testing.T) {
	ctx := context.Background()
	events := lifecycle("j", "acme")
	orders := map[string][]job.Message{
		"log order": events,
		// RabbitMQ keeps no order: the job's end first, its start last.
		"reversed": func() []job.Message {
			r := make([]job.Message, len(events))
			for i, e := range events {
				r[len(events)-1-i] = e
			}
			return r
		}(),
		// Every event delivered twice, under different ids.
		"duplicated": append(append([]job.Message{}, events...), events...),
	}
	for name, order := range orders {
		t.Run(name, func(t *testing.T) {
			store := newMemStore()
			for _, w := range []notify.Webhook{
				{ID: "all", Tenant: "acme", URL: "https://a", CreatedAt: t0.Add(-time.Hour)},
				{ID: "ends", Tenant: "acme", URL: "https://b", EventTypes: []notify.Type{notify.TypeJobCompleted, notify.TypeJobFailed},
					CreatedAt: t0.Add(-time.Hour)},
				{ID: "late", Tenant: "acme", URL: "https://c", CreatedAt: t0.Add(4 * time.Second)},
				{ID: "other-tenant", Tenant: "globex", URL: "https://d", CreatedAt: t0.Add(-time.Hour)},
			} {
				if err := store.SaveWebhook(ctx, w, "whsec_x"); err != nil {
					t.Fatal(err)
				}
			}
			jobs := &jobReader{tenants: map[string]string{"j": "acme"}}
			p := newProjection(t, store, jobs)
			for i, e := range order {
				if err := p.Apply(ctx, fmt.Sprintf("event-%d", i), e); err != nil {
					t.Fatalf("Apply %T: %v", e, err)
				}
			}
			ds, _ := store.snapshot()
			got := strings.Join(keys(ds), "\n")
			var want []string
			for _, k := range lifecycleKeys {
				want = append(want, "all "+k)
				if k == "j/job.completed/0" {
					want = append(want, "ends "+k)
				}
				// Registered after step 2 started: only what happened since.
				if k == "j/step.finished/2" || k == "j/step.started/3" || k == "j/step.finished/3" || k == "j/job.completed/0" {
					want = append(want, "late "+k)
				}
			}
			sort.Strings(want)
			if wantKeys := strings.Join(want, "\n"); got != wantKeys {
				t.Fatalf("deliveries:\n%s\nwant:\n%s", got, wantKeys)
			}
			for _, d := range ds {
				if d.Tenant != "acme" || d.State != notify.DeliveryPending || d.Attempts != 0 {
					t.Fatalf("delivery %+v", d)
				}
			}
			// The tenant is looked up at most once per job; JobStarted carries it.
			if jobs.reads > 1 {
				t.Fatalf("%d reads of the job, want at most 1", jobs.reads)
			}
		})
	}
}

func TestProjectionIgnoresEventsWithoutNotifications(t *testing.T) {
	store := newMemStore()
	jobs := &jobReader{err: errors.New("the job store must not be read")}
	p := newProjection(t, store, jobs)
	for _, e := range []job.Message{
		job.Step2SubjobCompleted{JobID: "j"}, job.Step2SubjobFailed{JobID: "j"}, job.StepFailed{JobID: "j"},
		job.AttemptTimedOut{JobID: "j"}, job.Tick{JobID: "j"},
	} {
		if err := p.Apply(context.Background(), "e", e); err != nil {
			t.Fatalf("Apply %T: %v", e, err)
		}
	}
	if jobs.reads != 0 || store.recordN != 0 {
		t.Fatalf("%d job reads and %d store writes for events that mean no notification", jobs.reads, store.recordN)
	}
}

func TestProjectionErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("an unknown job is logged and skipped", func(t *testing.T) {
		var logs bytes.Buffer
		store := newMemStore()
		p, err := notify.NewProjection(store, &jobReader{tenants: map[string]string{}}, time.Now, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Apply(ctx, "e1", job.JobCompleted{JobID: "ghost", At: t0}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		if store.recordN != 0 || !strings.Contains(logs.String(), "ghost") {
			t.Fatalf("%d writes; log %q", store.recordN, logs.String())
		}
	})
	t.Run("a failing job store is retried", func(t *testing.T) {
		boom := errors.New("database is down")
		p := newProjection(t, newMemStore(), &jobReader{err: boom})
		if err := p.Apply(ctx, "e1", job.JobCompleted{JobID: "j", At: t0}); !errors.Is(err, boom) {
			t.Fatalf("Apply: %v, want %v", err, boom)
		}
	})
	t.Run("a failing store is retried", func(t *testing.T) {
		boom := errors.New("database is down")
		store := newMemStore()
		store.recordErr = boom
		p := newProjection(t, store, &jobReader{tenants: map[string]string{"j": "acme"}})
		if err := p.Apply(ctx, "e1", job.JobCompleted{JobID: "j", At: t0}); !errors.Is(err, boom) {
			t.Fatalf("Apply: %v, want %v", err, boom)
		}
	})
}

func TestProjectionReset(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	if err := store.SaveWebhook(ctx, notify.Webhook{ID: "w", Tenant: "acme", URL: "https://a", CreatedAt: t0.Add(-time.Hour)}, "s"); err != nil {
		t.Fatal(err)
	}
	p := newProjection(t, store, &jobReader{tenants: map[string]string{"j": "acme"}})
	if p.Name() != "notifier" {
		t.Fatalf("Name = %q", p.Name())
	}
	replay := func() {
		for i, e := range lifecycle("j", "acme") {
			if err := p.Apply(ctx, fmt.Sprint(i), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	replay()
	before, _ := store.snapshot()
	if err := p.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if ds, _ := store.snapshot(); len(ds) != 0 {
		t.Fatalf("%d deliveries after Reset", len(ds))
	}
	if _, err := store.Webhook(ctx, "acme", "w"); err != nil {
		t.Fatalf("the webhook did not survive Reset: %v", err)
	}
	replay()
	after, _ := store.snapshot()
	if len(after) != len(before) || len(after) != len(lifecycleKeys) {
		t.Fatalf("%d deliveries after the replay, %d before", len(after), len(before))
	}
	for i := range after {
		if after[i].ID != before[i].ID {
			t.Fatalf("delivery %d has id %s after the replay, %s before", i, after[i].ID, before[i].ID)
		}
	}
}
