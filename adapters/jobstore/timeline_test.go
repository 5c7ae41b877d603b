package jobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/job/jobtest"
	"github.com/jobmill/jobmill/app/manager"
	"github.com/jobmill/jobmill/app/timeline"
)

func newTimeline(t *testing.T, b backend) *timeline.Projection {
	t.Helper()
	db, ok := b.store.(ProjectionDB)
	if !ok {
		t.Fatalf("%T is not a ProjectionDB", b.store)
	}
	st, err := NewTimelineStore(db)
	if err != nil {
		t.Fatal(err)
	}
	p, err := timeline.New(st)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tlDelivery is one message of the log as a projection receives it.
type tlDelivery struct {
	id string
	ev job.Message
}

func tlNumbered(prefix string, events []job.Message) []tlDelivery {
	out := make([]tlDelivery, len(events))
	for i, e := range events {
		out[i] = tlDelivery{id: fmt.Sprintf("%s-%03d", prefix, i+1), ev: e}
	}
	return out
}

func tlApply(t *testing.T, ctx context.Context, p *timeline.Projection, ds []tlDelivery) {
	t.Helper()
	for _, d := range ds {
		if err := p.Apply(ctx, d.id, d.ev); err != nil {
			t.Fatal(err)
		}
	}
}

// tlView is all the read side shows of one job, read page by page.
type tlView struct {
	Summary timeline.Summary
	SubJobs []timeline.SubJob
	Entries []timeline.Entry
}

func readTimeline(t *testing.T, p *timeline.Projection, jobID, tenant string) tlView {
	t.Helper()
	ctx := context.Background()
	var v tlView
	var err error
	if v.Summary, err = p.Job(ctx, jobID, tenant); err != nil {
		t.Fatal(err)
	}
	for after := int64(0); ; {
		page, err := p.Timeline(ctx, jobID, tenant, after, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		v.Entries = append(v.Entries, page...)
		after = page[len(page)-1].Pos
	}
	for after := int64(-1); ; {
		page, err := p.SubJobs(ctx, jobID, tenant, "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		v.SubJobs = append(v.SubJobs, page...)
		after = page[len(page)-1].Index
	}
	return v
}

// tlScenario is a job of three sub-jobs: one succeeds on its second attempt, one fails twice (the second
// time by time-out), one succeeds and is reported twice by its worker.
func tlScenario(jobID string) ([]job.Message, tlView) {
	long := strings.Repeat("ü", 1500) // 3000 bytes of a two-byte letter
	cut := strings.Repeat("ü", timeline.MaxDetail/2)
	counts := job.Counts{Total: 3, Succeeded: 2, Failed: 1, Retries: 2, TimedOut: 1, Duplicates: 1}
	events := []job.Message{
		job.JobStarted{JobID: jobID, Tenant: "acme", Type: "invoices", Seq: 1, At: at(1000)},
		job.Step1Completed{JobID: jobID, Attempt: 1, Total: 3, At: at(1001)},
		job.Step2Started{JobID: jobID, Total: 3, Seq: 2, At: at(1002)},
		job.Step2SubjobFailed{JobID: jobID, Index: 0, Attempt: 1, Error: long, At: at(1003), Duration: time.Second},
		job.Step2SubjobCompleted{JobID: jobID, Index: 0, Attempt: 2, At: at(1004), Duration: 1500 * time.Millisecond},
		job.Step2SubjobFailed{JobID: jobID, Index: 1, Attempt: 1, Error: "flaky", At: at(1005), Duration: time.Second},
		job.AttemptTimedOut{JobID: jobID, Step: 2, Index: 1, Attempt: 2, Seq: 3, At: at(1006)},
		job.Step2SubjobCompleted{JobID: jobID, Index: 2, Attempt: 1, At: at(1007), Duration: 2 * time.Second},
		job.Step2SubjobCompleted{JobID: jobID, Index: 2, Attempt: 1, At: at(1008), Duration: 3 * time.Second},
		job.Step2Completed{JobID: jobID, Succeeded: 2, Failed: 1, Seq: 4, At: at(1009)},
		job.Step3Completed{JobID: jobID, Attempt: 1, At: at(1010)},
		job.JobCompleted{JobID: jobID, Seq: 5, At: at(1011), Counts: counts},
	}
	want := tlView{
		Summary: timeline.Summary{
			Header: timeline.Header{JobID: jobID, Tenant: "acme", Type: "invoices", State: job.StateCompleted, StateSeq: 5,
				Seq: 5, Total: 3, Step2Closed: true, StartedAt: at(1000), EndedAt: at(1011), Counts: counts},
			Events:  int64(len(events)),
			SubJobs: map[job.SubJobState]int64{job.SubJobSucceeded: 2, job.SubJobFailed: 1},
		},
		SubJobs: []timeline.SubJob{
			{Index: 0, State: job.SubJobSucceeded, Attempts: 2, FailedAttempts: 1, LastError: cut, LastErrorAt: at(1003),
				Duration: 1500 * time.Millisecond, FinishedAt: at(1004)},
			{Index: 1, State: job.SubJobFailed, Attempts: 2, FailedAttempts: 2, TimedOut: 1, LastError: "attempt 2 timed out",
				LastErrorAt: at(1006), FinishedAt: at(1006)},
			{Index: 2, State: job.SubJobSucceeded, Attempts: 1, Duration: 2 * time.Second, FinishedAt: at(1007)},
		},
	}
	return events, want
}

func TestTimelineStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		p := newTimeline(t, b)

		t.Run("a job's events", func(t *testing.T) {
			events, want := tlScenario("tl-events")
			ds := tlNumbered("events", events)
			tlApply(t, ctx, p, ds)
			got := readTimeline(t, p, "tl-events", "acme")
			if !reflect.DeepEqual(got.Summary, want.Summary) {
				t.Fatalf("summary:\n got %+v\nwant %+v", got.Summary, want.Summary)
			}
			if !reflect.DeepEqual(got.SubJobs, want.SubJobs) {
				t.Fatalf("sub-jobs:\n got %+v\nwant %+v", got.SubJobs, want.SubJobs)
			}
			if len(got.Entries) != len(events) {
				t.Fatalf("%d entries, want %d", len(got.Entries), len(events))
			}
			for i, e := range got.Entries {
				if e.Pos != int64(i+1) || e.EventID != ds[i].id {
					t.Fatalf("entry %d: position %d, message %s; want %d, %s", i, e.Pos, e.EventID, i+1, ds[i].id)
				}
			}
			fourth := timeline.Entry{Pos: 4, EventID: ds[3].id, Kind: timeline.KindStep2SubjobFailed, At: at(1003), Step: 2,
				Index: 0, Attempt: 1, Duration: time.Second, Detail: want.SubJobs[0].LastError}
			seventh := timeline.Entry{Pos: 7, EventID: ds[6].id, Kind: timeline.KindAttemptTimedOut, Seq: 3, At: at(1006),
				Step: 2, Index: 1, Attempt: 2, Detail: "attempt 2 timed out"}
			if !reflect.DeepEqual(got.Entries[3], fourth) || !reflect.DeepEqual(got.Entries[6], seventh) {
				t.Fatalf("entries 4 and 7:\n got %+v\n     %+v\nwant %+v\n     %+v", got.Entries[3], got.Entries[6], fourth, seventh)
			}
			failed, err := p.SubJobs(ctx, "tl-events", "acme", job.SubJobFailed, -1, 10)
			if err != nil || len(failed) != 1 || failed[0].Index != 1 {
				t.Fatalf("failed sub-jobs: %+v, %v", failed, err)
			}
		})

		t.Run("a redelivered message adds nothing", func(t *testing.T) {
			first := job.Step2SubjobFailed{JobID: "tl-redelivery", Index: 0, Attempt: 1, Error: "x", At: at(1)}
			again := first
			again.At = at(2)
			tlApply(t, ctx, p, []tlDelivery{{"r-1", first}, {"r-1", first}, {"r-2", again}, {"r-1", first}})
			v := readTimeline(t, p, "tl-redelivery", "")
			if len(v.Entries) != 2 || v.Entries[0].EventID != "r-1" || v.Entries[1].EventID != "r-2" {
				t.Fatalf("entries %+v, want r-1 then r-2", v.Entries)
			}
			if len(v.SubJobs) != 1 || v.SubJobs[0].FailedAttempts != 1 || !v.SubJobs[0].LastErrorAt.Equal(at(1)) {
				t.Fatalf("sub-jobs %+v", v.SubJobs)
			}
		})

		t.Run("inside a log batch", func(t *testing.T) {
			events, want := tlScenario("tl-batch")
			b.inBatch(t, func(bctx context.Context) {
				tlApply(t, bctx, p, tlNumbered("batch", events))
				// The writes joined the batch's transaction: nothing is visible outside before it commits.
				if _, err := p.Job(ctx, "tl-batch", ""); !errors.Is(err, job.ErrNotFound) {
					t.Errorf("the job is visible before the batch committed: %v", err)
				}
			})
			got := readTimeline(t, p, "tl-batch", "acme")
			if !reflect.DeepEqual(got.Summary, want.Summary) || !reflect.DeepEqual(got.SubJobs, want.SubJobs) ||
				len(got.Entries) != len(events) {
				t.Fatalf("after the batch committed:\n got %+v\nwant %+v", got, want)
			}
		})

		t.Run("tenants see only their jobs", func(t *testing.T) {
			events, _ := tlScenario("tl-tenant")
			tlApply(t, ctx, p, tlNumbered("tenant", events))
			tlApply(t, ctx, p, []tlDelivery{{"orphan-1", job.Step2SubjobCompleted{JobID: "tl-orphan", Index: 0, Attempt: 1, At: at(1)}}})
			for _, c := range []struct {
				job, tenant string
				found       bool
			}{
				{"tl-tenant", "acme", true}, {"tl-tenant", "", true}, {"tl-tenant", "globex", false},
				// JobStarted has not arrived: nothing proves whose the job is.
				{"tl-orphan", "acme", false}, {"tl-orphan", "", true},
				{"tl-never", "", false},
			} {
				_, errJob := p.Job(ctx, c.job, c.tenant)
				_, errTimeline := p.Timeline(ctx, c.job, c.tenant, 0, 10)
				_, errSubs := p.SubJobs(ctx, c.job, c.tenant, "", -1, 10)
				for what, err := range map[string]error{"Job": errJob, "Timeline": errTimeline, "SubJobs": errSubs} {
					if c.found && err != nil || !c.found && !errors.Is(err, job.ErrNotFound) {
						t.Errorf("%s(%s, tenant %q): %v, want found=%v", what, c.job, c.tenant, err, c.found)
					}
				}
			}
		})

		t.Run("consumers applying one job's events at once", func(t *testing.T) {
			events, want := tlScenario("tl-concurrent")
			ds := tlNumbered("concurrent", events)
			var wg sync.WaitGroup
			errs := make(chan error, 2*len(ds))
			for _, d := range append(slices.Clone(ds), ds...) { // every message delivered twice
				wg.Go(func() {
					var err error
					for range 20 { // a transport delivers a message again after an error
						if err = p.Apply(ctx, d.id, d.ev); err == nil {
							return
						}
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			got := readTimeline(t, p, "tl-concurrent", "acme")
			if !reflect.DeepEqual(got.Summary, want.Summary) || !reflect.DeepEqual(got.SubJobs, want.SubJobs) {
				t.Fatalf("applied concurrently:\n got %+v\nwant %+v", got, want)
			}
			ids := map[string]bool{}
			for i, e := range got.Entries {
				if e.Pos != int64(i+1) || ids[e.EventID] {
					t.Fatalf("entry %d: position %d, message %s (seen before: %v)", i, e.Pos, e.EventID, ids[e.EventID])
				}
				ids[e.EventID] = true
			}
			if len(ids) != len(ds) {
				t.Fatalf("%d entries, want %d", len(ids), len(ds))
			}
		})

		t.Run("reset and replay", func(t *testing.T) {
			events, want := tlScenario("tl-replay")
			ds := tlNumbered("replay", events)
			tlApply(t, ctx, p, ds)
			first := readTimeline(t, p, "tl-replay", "acme")
			if err := p.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"tl-replay", "tl-events", "tl-batch"} {
				if _, err := p.Job(ctx, id, ""); !errors.Is(err, job.ErrNotFound) {
					t.Fatalf("%s after Reset: %v", id, err)
				}
			}
			tlApply(t, ctx, p, ds)
			if again := readTimeline(t, p, "tl-replay", "acme"); !reflect.DeepEqual(again, first) {
				t.Fatalf("replayed:\n got %+v\nwant %+v", again, first)
			}

			// Replayed in reverse (RabbitMQ keeps no order), the views are the same; only the positions
			// follow the new order.
			if err := p.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			reversed := slices.Clone(ds)
			slices.Reverse(reversed)
			tlApply(t, ctx, p, reversed)
			got := readTimeline(t, p, "tl-replay", "acme")
			if !reflect.DeepEqual(got.Summary, want.Summary) || !reflect.DeepEqual(got.SubJobs, want.SubJobs) {
				t.Fatalf("replayed in reverse:\n got %+v\nwant %+v", got, want)
			}
			if len(got.Entries) != len(ds) || got.Entries[0].EventID != ds[len(ds)-1].id || got.Entries[0].Pos != 1 {
				t.Fatalf("entries replayed in reverse: %+v", got.Entries)
			}
		})
	})
}

// recordingStore is the real job store, remembering the events the manager's transactions commit to
// the log, in order.
type recordingStore struct {
	job.Store
	log *eventLog
}

type eventLog struct {
	mu     sync.Mutex
	events []job.Message
}

func (l *eventLog) append(events ...job.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, events...)
}

func (l *eventLog) all() []job.Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

func (r *recordingStore) Update(ctx context.Context, fn func(ctx context.Context, tx job.Tx) error) error {
	return r.Store.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		return fn(ctx, &recordingTx{Tx: tx, log: r.log})
	})
}

type recordingTx struct {
	job.Tx
	log *eventLog
}

func (t *recordingTx) Publish(ctx context.Context, fx job.Effects) error {
	if err := t.Tx.Publish(ctx, fx); err != nil {
		return err
	}
	events := slices.Clone(fx.Events)
	t.Tx.AfterCommit(func() { t.log.append(events...) })
	return nil
}

type quietObserver struct{}

func (quietObserver) Step2Closed(string, time.Duration) {}
func (quietObserver) Absorbed(string, job.Outcome)      {}
func (quietObserver) JobEnded(string, job.State)        {}

// TestTimelineMatchesTheJobStore runs a job with retries, time-outs and failures through the manager on
// the real store, projects the events that reached the log, and compares the projection with what the
// store holds.
func TestTimelineMatchesTheJobStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		log := &eventLog{}
		st := &recordingStore{Store: b.store, log: log}
		var mu sync.Mutex
		now := at(5000)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		m, err := manager.New(st, manager.Config{Window: 16}, clock, quietObserver{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		policy := job.Policy{SubJobTimeout: time.Minute, StepTimeout: 10 * time.Minute, MaxAttempts: 2,
			Backoff: job.Backoff{Multiplier: 1}, ToleratedFailures: 10} // retries start at once
		const id = "tl-consistency"
		j, fx, err := job.New(id, "acme", "invoices", []byte(`{}`), policy, clock())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Update(ctx, func(ctx context.Context, tx job.Tx) error {
			if _, err := tx.CreateJob(ctx, j, ""); err != nil {
				return err
			}
			return tx.Publish(ctx, fx)
		}); err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		// report puts a worker's report on the log and lets the manager consume it.
		report := func(e job.Message) {
			t.Helper()
			log.append(e)
			switch ev := e.(type) {
			case job.Step1Completed:
				must(m.OnStep1Completed(ctx, &ev))
			case job.Step2SubjobCompleted:
				must(m.OnSubJobsReported(ctx, jobtest.Completed(&ev)))
			case job.Step2SubjobFailed:
				must(m.OnSubJobsReported(ctx, jobtest.Failed(&ev)))
			case job.Step3Completed:
				must(m.OnStep3Completed(ctx, &ev))
			default:
				t.Fatalf("not a report: %T", e)
			}
		}
		okAt := func(index int64, attempt int) job.Step2SubjobCompleted {
			return job.Step2SubjobCompleted{JobID: id, Index: index, Attempt: attempt, At: clock(), Duration: time.Duration(index+1) * time.Second}
		}
		failAt := func(index int64, attempt int, msg string) job.Step2SubjobFailed {
			return job.Step2SubjobFailed{JobID: id, Index: index, Attempt: attempt, Error: msg, At: clock(), Duration: time.Second}
		}

		started := fx.Events[0].(job.JobStarted)
		must(m.OnJobStarted(ctx, &started))
		addSubJobs(t, b.store, id, 0, 6)
		report(job.Step1Completed{JobID: id, Attempt: 1, Total: 6, At: clock()})
		report(okAt(0, 1))
		report(failAt(1, 1, "flaky"))
		report(okAt(1, 2))
		report(failAt(2, 1, "bad input"))
		report(failAt(2, 2, "bad input again")) // attempts used up: FAILED
		report(okAt(4, 1))
		report(okAt(4, 1)) // the worker reported twice
		report(failAt(5, 1, "slow"))

		p := newTimeline(t, b)
		ds := tlNumbered("consistency", log.all())
		tlApply(t, ctx, p, ds)
		// While step 2 runs, successes agree exactly; a sub-job with failures and no success is
		// RETRY_WAIT (the log does not say whether its attempts are used up or its retry started).
		stored, err := b.store.ListSubJobs(ctx, id, "", -1, 100)
		must(err)
		projected := subJobsByIndex(t, p, id)
		for _, s := range stored {
			got, seen := projected[s.Index]
			switch {
			case s.State == job.SubJobSucceeded && (!seen || got.State != job.SubJobSucceeded):
				t.Errorf("sub-job %d is SUCCEEDED in the store, %+v in the projection", s.Index, got)
			case s.State != job.SubJobSucceeded && seen && got.State != job.SubJobRetryWait:
				t.Errorf("sub-job %d is %s in the store with error %q, %+v in the projection", s.Index, s.State, s.LastError, got)
			}
		}

		// The tick times out sub-job 3's first attempt (retried) and sub-job 5's second (its last).
		mu.Lock()
		now = now.Add(2 * time.Minute)
		mu.Unlock()
		must(m.OnTick(ctx, &job.Tick{JobID: id, At: clock()}))
		report(okAt(3, 2)) // the last outcome: step 2 closes
		var closed *job.Step2Completed
		for _, e := range log.all() {
			if c, ok := e.(job.Step2Completed); ok {
				closed = &c
			}
		}
		if closed == nil {
			t.Fatal("step 2 did not close")
		}
		must(m.OnStep2Completed(ctx, closed))
		report(job.Step3Completed{JobID: id, Attempt: 1, At: clock()})

		ds = tlNumbered("consistency", log.all())
		tlApply(t, ctx, p, ds) // the first messages again (same ids), then the rest
		final, err := b.store.GetJob(ctx, id)
		must(err)
		if final.State != job.StateCompleted {
			t.Fatalf("job %s, want COMPLETED", final.State)
		}
		checkAgainstStore := func(t *testing.T) {
			stored, err := b.store.ListSubJobs(ctx, id, "", -1, 100)
			must(err)
			projected := subJobsByIndex(t, p, id)
			if len(projected) != len(stored) {
				t.Fatalf("%d sub-jobs projected, %d stored", len(projected), len(stored))
			}
			var failedAttempts, timedOut int64
			for _, s := range stored {
				got := projected[s.Index]
				if got.State != s.State || got.Attempts != s.Attempt {
					t.Errorf("sub-job %d: projected %s after %d attempts, stored %s after %d", s.Index, got.State, got.Attempts, s.State, s.Attempt)
				}
				// The store's timeout message names the policy's time-out, which the log does not carry.
				if s.State == job.SubJobFailed && !strings.HasPrefix(s.LastError, got.LastError) {
					t.Errorf("sub-job %d: projected last error %q, stored %q", s.Index, got.LastError, s.LastError)
				}
				failedAttempts += int64(got.FailedAttempts)
				timedOut += int64(got.TimedOut)
			}
			sum, err := p.Job(ctx, id, "acme")
			must(err)
			want := job.Counts{Total: final.Total, Succeeded: final.Succeeded, Failed: final.Failed, Retries: final.Retries,
				TimedOut: final.TimedOut, Duplicates: final.Duplicates, Late: final.Late}
			if sum.State != final.State || sum.Seq != final.Seq || sum.Total != final.Total || sum.Counts != want ||
				sum.Tenant != final.Tenant || sum.Type != final.Type {
				t.Errorf("header %+v, job %+v", sum.Header, final)
			}
			if sum.SubJobs[job.SubJobSucceeded] != final.Succeeded || sum.SubJobs[job.SubJobFailed] != final.Failed {
				t.Errorf("projected counts %v, job succeeded %d failed %d", sum.SubJobs, final.Succeeded, final.Failed)
			}
			// Every failed attempt either was retried or failed its sub-job for good.
			if failedAttempts != final.Retries+final.Failed || timedOut != final.TimedOut {
				t.Errorf("%d failed attempts (%d timed out) projected; job retried %d, failed %d, timed out %d",
					failedAttempts, timedOut, final.Retries, final.Failed, final.TimedOut)
			}
			if sum.Events != int64(len(ds)) {
				t.Errorf("%d events in the timeline, %d on the log", sum.Events, len(ds))
			}
		}
		t.Run("in log order", checkAgainstStore)

		must(p.Reset(ctx))
		reversed := slices.Clone(ds)
		slices.Reverse(reversed)
		tlApply(t, ctx, p, reversed)
		t.Run("rebuilt in reverse order", checkAgainstStore)
	})
}

func subJobsByIndex(t *testing.T, p *timeline.Projection, jobID string) map[int64]timeline.SubJob {
	t.Helper()
	subs, err := p.SubJobs(context.Background(), jobID, "", "", -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]timeline.SubJob{}
	for _, s := range subs {
		out[s.Index] = s
	}
	return out
}
