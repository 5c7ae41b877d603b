package jobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/notify"
)

func webhookStore(t *testing.T, st job.Store) *Webhooks {
	t.Helper()
	db, ok := st.(ProjectionDB)
	if !ok {
		t.Fatalf("%T is no ProjectionDB", st)
	}
	w, err := NewWebhooks(db)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func saveWebhook(t *testing.T, s *Webhooks, w notify.Webhook, secret notify.Secret) {
	t.Helper()
	if err := s.SaveWebhook(context.Background(), w, secret); err != nil {
		t.Fatal(err)
	}
}

// jobEvents is every event of one job that ran to its end, with each worker report sent twice.
func webhookJobEvents(jobID, tenant string, start time.Time) []job.Message {
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	return []job.Message{
		job.JobStarted{JobID: jobID, Tenant: tenant, Type: "invoices", Seq: 1, At: at(0)},
		job.Step1Completed{JobID: jobID, Attempt: 1, Total: 2, At: at(1)},
		job.Step1Completed{JobID: jobID, Attempt: 1, Total: 2, At: at(1)},
		job.Step2Started{JobID: jobID, Total: 2, Seq: 2, At: at(2)},
		job.Step2SubjobCompleted{JobID: jobID, Index: 0, At: at(3)},
		job.Step2SubjobCompleted{JobID: jobID, Index: 1, At: at(3)},
		job.Step2Completed{JobID: jobID, Succeeded: 2, Seq: 3, At: at(4)},
		job.Step3Completed{JobID: jobID, Attempt: 1, At: at(5)},
		job.Step3Completed{JobID: jobID, Attempt: 1, At: at(5)},
		job.JobCompleted{JobID: jobID, Seq: 4, At: at(6), Counts: job.Counts{Total: 2, Succeeded: 2}},
	}
}

func deliveryKeys(ds []notify.Delivery) []string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, d.WebhookID+" "+d.Key())
	}
	sort.Strings(ks)
	return ks
}

func TestWebhookStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := webhookStore(t, b.store)
		mustCreate(t, b.store, "job-1", "acme", "invoices")
		mustCreate(t, b.store, "job-2", "globex", "invoices")

		all := notify.Webhook{ID: "wh-all", Tenant: "acme", URL: "https://a.example/in?x=1", CreatedAt: at(10)}
		ends := notify.Webhook{ID: "wh-ends", Tenant: "acme", URL: "http://b.example", CreatedAt: at(11),
			EventTypes: []notify.Type{notify.TypeJobCompleted, notify.TypeJobFailed, notify.TypeJobCancelled}}
		other := notify.Webhook{ID: "wh-globex", Tenant: "globex", URL: "https://c.example", CreatedAt: at(12)}
		saveWebhook(t, s, all, "whsec_all")
		saveWebhook(t, s, ends, "whsec_ends")
		saveWebhook(t, s, other, "whsec_globex")
		if err := s.SaveWebhook(ctx, all, "whsec_again"); err == nil {
			t.Fatal("a second webhook with the same id was stored")
		}

		t.Run("webhooks of one tenant only", func(t *testing.T) {
			ws, err := s.ListWebhooks(ctx, "acme")
			if err != nil || !reflect.DeepEqual(ws, []notify.Webhook{all, ends}) {
				t.Fatalf("acme's webhooks: %+v, %v", ws, err)
			}
			if w, err := s.Webhook(ctx, "acme", ends.ID); err != nil || !reflect.DeepEqual(w, ends) {
				t.Fatalf("Webhook: %+v, %v", w, err)
			}
			if _, err := s.Webhook(ctx, "acme", other.ID); !errors.Is(err, notify.ErrNotFound) {
				t.Fatalf("another tenant's webhook: %v", err)
			}
			if err := s.DeleteWebhook(ctx, "acme", other.ID); !errors.Is(err, notify.ErrNotFound) {
				t.Fatalf("deleting another tenant's webhook: %v", err)
			}
			if _, err := s.Webhook(ctx, "globex", other.ID); err != nil {
				t.Fatalf("globex's webhook after acme tried to delete it: %v", err)
			}
		})

		// The notifier applies every event twice, each time in a batch of the log: a transport that
		// delivers again sends the same event id, a worker that reports twice another one.
		p, err := notify.NewProjection(s, b.store, func() time.Time { return at(100) }, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		events := append(webhookJobEvents("job-1", "acme", at(20)), webhookJobEvents("job-2", "globex", at(20))...)
		for round := range 2 {
			b.inBatch(t, func(ctx context.Context) {
				for i, e := range events {
					if err := p.Apply(ctx, fmt.Sprintf("event-%d", i), e); err != nil {
						t.Fatalf("round %d, Apply %T: %v", round, e, err)
					}
				}
			})
		}
		// Out of order (a RabbitMQ log): the end of a job before its start.
		b.inBatch(t, func(ctx context.Context) {
			for i := len(events) - 1; i >= 0; i-- {
				if err := p.Apply(ctx, fmt.Sprintf("event-%d", i), events[i]); err != nil {
					t.Fatal(err)
				}
			}
		})

		acme, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		wantAcme := []string{"wh-all job-1/job.completed/0", "wh-all job-1/job.started/0", "wh-all job-1/step.finished/1",
			"wh-all job-1/step.finished/2", "wh-all job-1/step.finished/3", "wh-all job-1/step.started/1",
			"wh-all job-1/step.started/2", "wh-all job-1/step.started/3", "wh-ends job-1/job.completed/0"}
		if got := deliveryKeys(acme); !reflect.DeepEqual(got, wantAcme) {
			t.Fatalf("acme's deliveries:\n%v\nwant\n%v", got, wantAcme)
		}
		globex, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "globex", Limit: 100})
		if err != nil || len(globex) != 8 {
			t.Fatalf("globex's deliveries: %d, %v", len(globex), err)
		}
		var finished notify.Delivery
		for _, d := range acme {
			if d.Tenant != "acme" || d.State != notify.DeliveryPending || d.Attempts != 0 || !d.CreatedAt.Equal(at(100)) ||
				!d.NextAttemptAt.Equal(at(100)) || d.ID != notify.DeliveryID(d.WebhookID, d.Notification) {
				t.Fatalf("recorded delivery %+v", d)
			}
			if d.Type == notify.TypeStepFinished && d.Step == 2 {
				finished = d
			}
		}
		if string(finished.Data) != `{"succeeded":2,"seq":3}` || !finished.At.Equal(at(24)) || finished.JobID != "job-1" {
			t.Fatalf("step 2 finished: %+v (data %s)", finished, finished.Data)
		}

		t.Run("listing filters and order", func(t *testing.T) {
			ds, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", WebhookID: "wh-ends", Limit: 10})
			if err != nil || len(ds) != 1 || ds[0].Type != notify.TypeJobCompleted {
				t.Fatalf("wh-ends: %+v, %v", ds, err)
			}
			if ds, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", WebhookID: "wh-globex", Limit: 10}); err != nil || len(ds) != 0 {
				t.Fatalf("acme asking for globex's webhook: %+v, %v", ds, err)
			}
			if ds, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", State: notify.DeliveryDead, Limit: 10}); err != nil || len(ds) != 0 {
				t.Fatalf("dead: %+v, %v", ds, err)
			}
			ds, err = s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", Limit: 3})
			if err != nil || len(ds) != 3 {
				t.Fatalf("limit 3: %d, %v", len(ds), err)
			}
			for i := 1; i < len(ds); i++ {
				if ds[i].ID > ds[i-1].ID { // same created_at: id descending
					t.Fatalf("not newest first: %s after %s", ds[i].ID, ds[i-1].ID)
				}
			}
			if _, err := s.Delivery(ctx, "globex", finished.ID); !errors.Is(err, notify.ErrNotFound) {
				t.Fatalf("globex reading acme's delivery: %v", err)
			}
		})

		t.Run("claims, outcomes and redelivery", func(t *testing.T) {
			now := at(200)
			claims, err := s.ClaimDeliveries(ctx, now, time.Minute, 5)
			if err != nil || len(claims) != 5 {
				t.Fatalf("claimed %d, %v", len(claims), err)
			}
			for _, c := range claims {
				want := map[string]string{"wh-all": "whsec_all", "wh-ends": "whsec_ends", "wh-globex": "whsec_globex"}[c.Delivery.WebhookID]
				if c.Delivery.Attempts != 1 || c.Lease == "" || string(c.Target.Secret) != want || c.Target.URL == "" ||
					!c.Delivery.NextAttemptAt.Equal(now.Add(time.Minute)) {
					t.Fatalf("claim %+v", c)
				}
			}
			rest, err := s.ClaimDeliveries(ctx, now, time.Minute, 100)
			if err != nil || len(rest) != 17-5 {
				t.Fatalf("claimed the rest: %d, %v", len(rest), err)
			}
			if more, err := s.ClaimDeliveries(ctx, now.Add(time.Minute-time.Microsecond), time.Minute, 100); err != nil || len(more) != 0 {
				t.Fatalf("claimed %d deliveries under lease, %v", len(more), err)
			}

			// Delivered, retried, dead.
			c0, c1, c2 := claims[0], claims[1], claims[2]
			if err := s.FinishDelivery(ctx, c0, notify.Outcome{State: notify.DeliveryDelivered, Attempts: 1, StatusCode: 204, At: at(201)}); err != nil {
				t.Fatal(err)
			}
			if err := s.FinishDelivery(ctx, c1, notify.Outcome{State: notify.DeliveryPending, Attempts: 1, StatusCode: 500,
				Error: "HTTP 500: down", NextAttemptAt: at(203), At: at(201)}); err != nil {
				t.Fatal(err)
			}
			if err := s.FinishDelivery(ctx, c2, notify.Outcome{State: notify.DeliveryDead, Attempts: 1, StatusCode: 0,
				Error: "request failed: connection refused", At: at(201)}); err != nil {
				t.Fatal(err)
			}
			// A second outcome for a claim is refused: the claim no longer holds the delivery.
			if err := s.FinishDelivery(ctx, c0, notify.Outcome{State: notify.DeliveryDead, Attempts: 1, At: at(202)}); !errors.Is(err, notify.ErrLeaseLost) {
				t.Fatalf("finishing twice: %v", err)
			}
			d0, _ := s.Delivery(ctx, c0.Delivery.Tenant, c0.Delivery.ID)
			d1, _ := s.Delivery(ctx, c1.Delivery.Tenant, c1.Delivery.ID)
			d2, _ := s.Delivery(ctx, c2.Delivery.Tenant, c2.Delivery.ID)
			if d0.State != notify.DeliveryDelivered || d0.LastStatusCode != 204 || !d0.DeliveredAt.Equal(at(201)) || !d0.NextAttemptAt.IsZero() ||
				!d0.UpdatedAt.Equal(at(201)) {
				t.Fatalf("delivered: %+v", d0)
			}
			if d1.State != notify.DeliveryPending || d1.LastError != "HTTP 500: down" || d1.LastStatusCode != 500 || !d1.NextAttemptAt.Equal(at(203)) {
				t.Fatalf("retried: %+v", d1)
			}
			if d2.State != notify.DeliveryDead || d2.LastError != "request failed: connection refused" || !d2.NextAttemptAt.IsZero() {
				t.Fatalf("dead: %+v", d2)
			}
			// The retry is due again at its time, with its attempts counted.
			again, err := s.ClaimDeliveries(ctx, at(203), time.Minute, 100)
			if err != nil || len(again) != 1 || again[0].Delivery.ID != d1.ID || again[0].Delivery.Attempts != 2 || again[0].Lease == c1.Lease {
				t.Fatalf("retry claimed: %+v, %v", again, err)
			}
			// An old lease cannot record an outcome over the new claim.
			if err := s.FinishDelivery(ctx, c1, notify.Outcome{State: notify.DeliveryDelivered, Attempts: 1, At: at(204)}); !errors.Is(err, notify.ErrLeaseLost) {
				t.Fatalf("outcome under an expired lease: %v", err)
			}

			// Redelivery (before the other leases expire): dead and delivered go back with a fresh budget;
			// pending is refused; tenants stay apart.
			for _, d := range []notify.Delivery{d2, d0} {
				if _, err := s.Redeliver(ctx, "nobody", d.ID, at(250)); !errors.Is(err, notify.ErrNotFound) {
					t.Fatalf("another tenant redelivering: %v", err)
				}
				rd, err := s.Redeliver(ctx, d.Tenant, d.ID, at(250))
				if err != nil || rd.State != notify.DeliveryPending || rd.Attempts != 0 || !rd.NextAttemptAt.Equal(at(250)) || rd.ID != d.ID {
					t.Fatalf("redelivered: %+v, %v", rd, err)
				}
			}
			if _, err := s.Redeliver(ctx, d1.Tenant, d1.ID, at(250)); !errors.Is(err, notify.ErrDeliveryPending) {
				t.Fatalf("redelivering a pending delivery: %v", err)
			}
			if _, err := s.Redeliver(ctx, "acme", "no-such-delivery", at(250)); !errors.Is(err, notify.ErrNotFound) {
				t.Fatalf("redelivering nothing: %v", err)
			}
			redo, err := s.ClaimDeliveries(ctx, at(250), time.Minute, 100)
			if err != nil || len(redo) != 2 {
				t.Fatalf("redeliveries claimed: %d, %v", len(redo), err)
			}
			for _, c := range redo {
				if c.Delivery.Attempts != 1 {
					t.Fatalf("redelivery claimed with %d attempts", c.Delivery.Attempts)
				}
			}
		})

		t.Run("recording again changes nothing", func(t *testing.T) {
			before, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var n int
			b.inBatch(t, func(ctx context.Context) {
				n, err = s.RecordDeliveries(ctx, "acme", notify.Notifications(webhookJobEvents("job-1", "acme", at(20))[9]), at(999))
			})
			if err != nil || n != 0 {
				t.Fatalf("recorded %d again, %v", n, err)
			}
			after, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", Limit: 100})
			if err != nil || !reflect.DeepEqual(after, before) {
				t.Fatalf("deliveries changed:\n%+v\n%+v (%v)", before, after, err)
			}
		})

		t.Run("reset keeps webhooks, delete takes deliveries", func(t *testing.T) {
			if err := s.DeleteWebhook(ctx, "acme", "wh-ends"); err != nil {
				t.Fatal(err)
			}
			if ds, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", WebhookID: "wh-ends", Limit: 10}); err != nil || len(ds) != 0 {
				t.Fatalf("deliveries of a deleted webhook: %+v, %v", ds, err)
			}
			if err := s.DeleteWebhook(ctx, "acme", "wh-ends"); !errors.Is(err, notify.ErrNotFound) {
				t.Fatalf("deleting twice: %v", err)
			}
			if err := p.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			for _, tenant := range []string{"acme", "globex"} {
				if ds, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: tenant, Limit: 10}); err != nil || len(ds) != 0 {
					t.Fatalf("%s's deliveries after Reset: %d, %v", tenant, len(ds), err)
				}
			}
			if ws, err := s.ListWebhooks(ctx, "acme"); err != nil || len(ws) != 1 || ws[0].ID != "wh-all" {
				t.Fatalf("webhooks after Reset: %+v, %v", ws, err)
			}
			if cs, err := s.ClaimDeliveries(ctx, at(10_000), time.Minute, 10); err != nil || len(cs) != 0 {
				t.Fatalf("claimed %d after Reset, %v", len(cs), err)
			}
		})
	})
}

// TestWebhookClaimsAreExclusive claims from two stores on separate connections (two processes), many
// claimers each, and checks that no delivery is handed out twice.
func TestWebhookClaimsAreExclusive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := webhookStore(t, b.store)
		saveWebhook(t, s, notify.Webhook{ID: "wh", Tenant: "acme", URL: "https://a.example", CreatedAt: at(1)}, "whsec_k")
		const total = 120
		var ns []notify.Notification
		for i := range total {
			ns = append(ns, notify.Notification{Type: notify.TypeJobCompleted, JobID: fmt.Sprintf("job-%03d", i), Tenant: "acme", At: at(2)})
		}
		if n, err := s.RecordDeliveries(ctx, "acme", ns, at(3)); err != nil || n != total {
			t.Fatalf("recorded %d, %v", n, err)
		}
		stores := []*Webhooks{s, webhookStore(t, b.reopen(t))}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					cs, err := stores[i%2].ClaimDeliveries(ctx, at(4), time.Hour, 7)
					if err != nil {
						errs <- err
						return
					}
					if len(cs) == 0 {
						return
					}
					mu.Lock()
					for _, c := range cs {
						seen[c.Delivery.ID]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if len(seen) != total {
			t.Fatalf("%d deliveries claimed, want %d", len(seen), total)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("delivery %s claimed %d times", id, n)
			}
		}
	})
}

// TestWebhookOrphanDeliveries: a delivery whose webhook is gone (recorded while the webhook was being
// deleted) is dropped by the next claim instead of being claimed forever.
func TestWebhookOrphanDeliveries(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		s := webhookStore(t, b.store)
		saveWebhook(t, s, notify.Webhook{ID: "wh", Tenant: "acme", URL: "https://a.example", CreatedAt: at(1)}, "whsec_k")
		ns := []notify.Notification{
			{Type: notify.TypeJobCompleted, JobID: "job-1", Tenant: "acme", At: at(2)},
			{Type: notify.TypeJobFailed, JobID: "job-2", Tenant: "acme", At: at(2)},
		}
		if n, err := s.RecordDeliveries(ctx, "acme", ns, at(3)); err != nil || n != 2 {
			t.Fatalf("recorded %d, %v", n, err)
		}
		// The webhook row goes, as a concurrent delete would leave it, without its deliveries.
		err := s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM webhooks WHERE id = ?`), "wh")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		cs, err := s.ClaimDeliveries(ctx, at(4), time.Minute, 10)
		if err != nil || len(cs) != 0 {
			t.Fatalf("claimed %d orphans, %v", len(cs), err)
		}
		if ds, err := s.Deliveries(ctx, notify.DeliveryFilter{Tenant: "acme", Limit: 10}); err != nil || len(ds) != 0 {
			t.Fatalf("orphans left: %d, %v", len(ds), err)
		}
	})
}
