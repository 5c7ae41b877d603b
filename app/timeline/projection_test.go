package timeline_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/timeline"
)

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func ts(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

const jobID = "job-1"

// delivery is one message as a transport hands it over: its id and its event.
type delivery struct {
	id string
	ev job.Message
}

// numbered gives each event a message id of its own, in order.
func numbered(events ...job.Message) []delivery {
	out := make([]delivery, len(events))
	for i, e := range events {
		out[i] = delivery{id: fmt.Sprintf("msg-%02d", i+1), ev: e}
	}
	return out
}

func started(tenant string, seq int64, sec int) job.JobStarted {
	return job.JobStarted{JobID: jobID, Tenant: tenant, Type: "invoices", Seq: seq, At: ts(sec)}
}

func ok(index int64, attempt, sec int, d time.Duration) job.Step2SubjobCompleted {
	return job.Step2SubjobCompleted{JobID: jobID, Index: index, Attempt: attempt, At: ts(sec), Duration: d}
}

func fail(index int64, attempt, sec int, msg string) job.Step2SubjobFailed {
	return job.Step2SubjobFailed{JobID: jobID, Index: index, Attempt: attempt, Error: msg, At: ts(sec), Duration: time.Second}
}

func timedOut(index int64, attempt int, seq int64, sec int) job.AttemptTimedOut {
	return job.AttemptTimedOut{JobID: jobID, Step: 2, Index: index, Attempt: attempt, Seq: seq, At: ts(sec)}
}

func step2Completed(seq int64, sec int) job.Step2Completed {
	return job.Step2Completed{JobID: jobID, Seq: seq, At: ts(sec)}
}

func newProjection(t *testing.T) (*timeline.Projection, *memStore) {
	t.Helper()
	st := newMemStore()
	p, err := timeline.New(st)
	if err != nil {
		t.Fatal(err)
	}
	return p, st
}

func applyAll(t *testing.T, p *timeline.Projection, ds []delivery) {
	t.Helper()
	for _, d := range ds {
		if err := p.Apply(context.Background(), d.id, d.ev); err != nil {
			t.Fatal(err)
		}
	}
}

func allSubJobs(t *testing.T, p *timeline.Projection) []timeline.SubJob {
	t.Helper()
	subs, err := p.SubJobs(context.Background(), jobID, "", "", -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return subs
}

// inBothOrders runs check on a projection of the deliveries in log order and on one of them reversed:
// the views must not depend on the order of arrival.
func inBothOrders(t *testing.T, ds []delivery, check func(t *testing.T, p *timeline.Projection)) {
	t.Helper()
	reversed := slices.Clone(ds)
	slices.Reverse(reversed)
	for name, order := range map[string][]delivery{"log order": ds, "reversed": reversed} {
		t.Run(name, func(t *testing.T) {
			p, _ := newProjection(t)
			applyAll(t, p, order)
			check(t, p)
		})
	}
}

func TestSubJobFolding(t *testing.T) {
	cases := []struct {
		name   string
		events []job.Message
		want   []timeline.SubJob
	}{
		{
			name:   "the first success finishes the sub-job",
			events: []job.Message{ok(0, 1, 10, 2*time.Second)},
			want:   []timeline.SubJob{{Index: 0, State: job.SubJobSucceeded, Attempts: 1, Duration: 2 * time.Second, FinishedAt: ts(10)}},
		},
		{
			name:   "a success after a failure keeps the failure's error",
			events: []job.Message{fail(3, 1, 5, "boom"), ok(3, 2, 10, 3*time.Second)},
			want: []timeline.SubJob{{Index: 3, State: job.SubJobSucceeded, Attempts: 2, FailedAttempts: 1,
				LastError: "boom", LastErrorAt: ts(5), Duration: 3 * time.Second, FinishedAt: ts(10)}},
		},
		{
			name:   "a second report of success is a duplicate",
			events: []job.Message{ok(0, 1, 10, 2*time.Second), ok(0, 1, 12, 5*time.Second)},
			want:   []timeline.SubJob{{Index: 0, State: job.SubJobSucceeded, Attempts: 1, Duration: 2 * time.Second, FinishedAt: ts(10)}},
		},
		{
			name: "a timed-out attempt that finishes after its retry started is the success",
			events: []job.Message{timedOut(0, 1, 3, 8), ok(0, 2, 20, time.Second),
				ok(0, 1, 15, 9*time.Second)},
			want: []timeline.SubJob{{Index: 0, State: job.SubJobSucceeded, Attempts: 2, FailedAttempts: 1, TimedOut: 1,
				LastError: "attempt 1 timed out", LastErrorAt: ts(8), Duration: 9 * time.Second, FinishedAt: ts(15)}},
		},
		{
			name:   "a failure and a time-out of one attempt count once; the worker's error is kept",
			events: []job.Message{timedOut(0, 1, 3, 8), fail(0, 1, 9, "disk full")},
			want: []timeline.SubJob{{Index: 0, State: job.SubJobRetryWait, Attempts: 1, FailedAttempts: 1, TimedOut: 1,
				LastError: "disk full", LastErrorAt: ts(9)}},
		},
		{
			name:   "one failure reported twice counts once",
			events: []job.Message{fail(0, 1, 5, "x"), fail(0, 1, 6, "x")},
			want: []timeline.SubJob{{Index: 0, State: job.SubJobRetryWait, Attempts: 1, FailedAttempts: 1,
				LastError: "x", LastErrorAt: ts(5)}},
		},
		{
			name:   "failed attempts wait for a retry while step 2 runs",
			events: []job.Message{fail(1, 1, 5, "first"), fail(1, 2, 7, "second")},
			want: []timeline.SubJob{{Index: 1, State: job.SubJobRetryWait, Attempts: 2, FailedAttempts: 2,
				LastError: "second", LastErrorAt: ts(7)}},
		},
		{
			name:   "failed attempts fail for good once step 2 closed",
			events: []job.Message{fail(1, 1, 5, "first"), timedOut(1, 2, 4, 9), ok(2, 1, 6, time.Second), step2Completed(5, 10)},
			want: []timeline.SubJob{
				{Index: 1, State: job.SubJobFailed, Attempts: 2, FailedAttempts: 2, TimedOut: 1,
					LastError: "attempt 2 timed out", LastErrorAt: ts(9), FinishedAt: ts(9)},
				{Index: 2, State: job.SubJobSucceeded, Attempts: 1, Duration: time.Second, FinishedAt: ts(6)},
			},
		},
		{
			name: "a job that ended with every outcome final closes step 2",
			events: []job.Message{fail(0, 1, 5, "bad"), ok(1, 1, 6, time.Second),
				job.JobFailed{JobID: jobID, Reason: "too many failures", Seq: 4, At: ts(11),
					Counts: job.Counts{Total: 2, Succeeded: 1, Failed: 1}}},
			want: []timeline.SubJob{
				{Index: 0, State: job.SubJobFailed, Attempts: 1, FailedAttempts: 1, LastError: "bad", LastErrorAt: ts(5), FinishedAt: ts(5)},
				{Index: 1, State: job.SubJobSucceeded, Attempts: 1, Duration: time.Second, FinishedAt: ts(6)},
			},
		},
		{
			name: "a job cancelled during step 2 leaves its waiting sub-jobs waiting, as the manager does",
			events: []job.Message{fail(0, 1, 5, "bad"), job.JobCancelled{JobID: jobID, Reason: "stop", Seq: 3, At: ts(11),
				Counts: job.Counts{Total: 4, Failed: 0}}},
			want: []timeline.SubJob{{Index: 0, State: job.SubJobRetryWait, Attempts: 1, FailedAttempts: 1, LastError: "bad", LastErrorAt: ts(5)}},
		},
		{
			name:   "time-outs of steps 1 and 3 are not about a sub-job",
			events: []job.Message{job.AttemptTimedOut{JobID: jobID, Step: 1, Attempt: 1, Seq: 2, At: ts(3)}, job.AttemptTimedOut{JobID: jobID, Step: 3, Attempt: 1, Seq: 9, At: ts(30)}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inBothOrders(t, numbered(c.events...), func(t *testing.T, p *timeline.Projection) {
				if got := allSubJobs(t, p); !reflect.DeepEqual(got, c.want) {
					t.Fatalf("sub-jobs:\n got %+v\nwant %+v", got, c.want)
				}
			})
		})
	}
}

func TestHeaderFolding(t *testing.T) {
	counts := job.Counts{Total: 2, Succeeded: 2, Retries: 1, TimedOut: 1, Duplicates: 3, Late: 1}
	cases := []struct {
		name   string
		events []job.Message
		want   timeline.Header
	}{
		{
			name:   "a started job runs step 1",
			events: []job.Message{started("acme", 1, 0)},
			want: timeline.Header{JobID: jobID, Tenant: "acme", Type: "invoices", State: job.StateStep1Running, StateSeq: 1, Seq: 1,
				StartedAt: ts(0)},
		},
		{
			name: "the manager's newest event gives the state; the final counters come with the end",
			events: []job.Message{started("acme", 1, 0), job.Step1Completed{JobID: jobID, Attempt: 1, Total: 2, At: ts(1)},
				job.Step2Started{JobID: jobID, Total: 2, Seq: 2, At: ts(2)}, ok(0, 1, 3, time.Second), timedOut(1, 1, 3, 4),
				ok(1, 2, 5, time.Second), step2Completed(4, 6), job.Step3Completed{JobID: jobID, Attempt: 1, At: ts(7)},
				job.JobCompleted{JobID: jobID, Seq: 5, At: ts(8), Counts: counts}},
			want: timeline.Header{JobID: jobID, Tenant: "acme", Type: "invoices", State: job.StateCompleted, StateSeq: 5, Seq: 5,
				Total: 2, Step2Closed: true, StartedAt: ts(0), EndedAt: ts(8), Counts: counts},
		},
		{
			name:   "a time-out raises the seq but changes no state",
			events: []job.Message{started("acme", 1, 0), job.AttemptTimedOut{JobID: jobID, Step: 1, Attempt: 1, Seq: 2, At: ts(3)}},
			want: timeline.Header{JobID: jobID, Tenant: "acme", Type: "invoices", State: job.StateStep1Running, StateSeq: 1, Seq: 2,
				StartedAt: ts(0)},
		},
		{
			name: "a job that failed in step 1 keeps its reason",
			events: []job.Message{started("", 1, 0), job.StepFailed{JobID: jobID, Step: 1, Attempt: 1, Error: "no input", At: ts(1)},
				job.JobFailed{JobID: jobID, Reason: "step 1 failed after 1 attempts: no input", Seq: 2, At: ts(2)}},
			want: timeline.Header{JobID: jobID, Type: "invoices", State: job.StateFailed, StateSeq: 2, Seq: 2, StartedAt: ts(0),
				EndedAt: ts(2), Error: "step 1 failed after 1 attempts: no input"},
		},
		{
			name: "a cancelled job",
			events: []job.Message{started("acme", 1, 0), job.Step2Started{JobID: jobID, Total: 5, Seq: 2, At: ts(2)},
				job.JobCancelled{JobID: jobID, Reason: "by user", Seq: 3, At: ts(4), Counts: job.Counts{Total: 5, Succeeded: 1}}},
			want: timeline.Header{JobID: jobID, Tenant: "acme", Type: "invoices", State: job.StateCancelled, StateSeq: 3, Seq: 3,
				Total: 5, StartedAt: ts(0), EndedAt: ts(4), Error: "by user", Counts: job.Counts{Total: 5, Succeeded: 1}},
		},
		{
			name:   "reports before JobStarted leave the job without an owner",
			events: []job.Message{ok(0, 1, 3, time.Second)},
			want:   timeline.Header{JobID: jobID},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inBothOrders(t, numbered(c.events...), func(t *testing.T, p *timeline.Projection) {
				got, err := p.Job(context.Background(), jobID, "")
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got.Header, c.want) {
					t.Fatalf("header:\n got %+v\nwant %+v", got.Header, c.want)
				}
				if got.Events != int64(len(c.events)) {
					t.Fatalf("%d events in the timeline, want %d", got.Events, len(c.events))
				}
			})
		})
	}
}

func TestEntries(t *testing.T) {
	cases := []struct {
		event job.Message
		want  timeline.Entry
	}{
		{started("acme", 1, 0), timeline.Entry{Kind: timeline.KindJobStarted, Seq: 1, At: ts(0), Index: timeline.NoSubJob}},
		{job.Step1Completed{JobID: jobID, Attempt: 2, Total: 9, At: ts(1)},
			timeline.Entry{Kind: timeline.KindStep1Completed, At: ts(1), Step: 1, Index: timeline.NoSubJob, Attempt: 2}},
		{job.Step2Started{JobID: jobID, Total: 9, Seq: 2, At: ts(2)},
			timeline.Entry{Kind: timeline.KindStep2Started, Seq: 2, At: ts(2), Step: 2, Index: timeline.NoSubJob}},
		{ok(4, 2, 3, 1500*time.Millisecond),
			timeline.Entry{Kind: timeline.KindStep2SubjobCompleted, At: ts(3), Step: 2, Index: 4, Attempt: 2, Duration: 1500 * time.Millisecond}},
		{fail(5, 1, 4, "boom"),
			timeline.Entry{Kind: timeline.KindStep2SubjobFailed, At: ts(4), Step: 2, Index: 5, Attempt: 1, Duration: time.Second, Detail: "boom"}},
		{timedOut(6, 3, 3, 5),
			timeline.Entry{Kind: timeline.KindAttemptTimedOut, Seq: 3, At: ts(5), Step: 2, Index: 6, Attempt: 3, Detail: "attempt 3 timed out"}},
		{job.AttemptTimedOut{JobID: jobID, Step: 3, Index: 0, Attempt: 1, Seq: 6, At: ts(6)},
			timeline.Entry{Kind: timeline.KindAttemptTimedOut, Seq: 6, At: ts(6), Step: 3, Index: timeline.NoSubJob, Attempt: 1, Detail: "attempt 1 timed out"}},
		{step2Completed(4, 7), timeline.Entry{Kind: timeline.KindStep2Completed, Seq: 4, At: ts(7), Step: 2, Index: timeline.NoSubJob}},
		{job.StepFailed{JobID: jobID, Step: 3, Attempt: 1, Error: "no disk", At: ts(8)},
			timeline.Entry{Kind: timeline.KindStepFailed, At: ts(8), Step: 3, Index: timeline.NoSubJob, Attempt: 1, Detail: "no disk"}},
		{job.Step3Completed{JobID: jobID, Attempt: 2, At: ts(9)},
			timeline.Entry{Kind: timeline.KindStep3Completed, At: ts(9), Step: 3, Index: timeline.NoSubJob, Attempt: 2}},
		{job.JobCompleted{JobID: jobID, Seq: 7, At: ts(10)},
			timeline.Entry{Kind: timeline.KindJobCompleted, Seq: 7, At: ts(10), Index: timeline.NoSubJob}},
		{job.JobFailed{JobID: jobID, Reason: "why", Seq: 7, At: ts(10)},
			timeline.Entry{Kind: timeline.KindJobFailed, Seq: 7, At: ts(10), Index: timeline.NoSubJob, Detail: "why"}},
		{job.JobCancelled{JobID: jobID, Reason: "user", Seq: 7, At: ts(10)},
			timeline.Entry{Kind: timeline.KindJobCancelled, Seq: 7, At: ts(10), Index: timeline.NoSubJob, Detail: "user"}},
	}
	for _, c := range cases {
		t.Run(c.want.Kind, func(t *testing.T) {
			p, _ := newProjection(t)
			applyAll(t, p, []delivery{{id: "m1", ev: c.event}})
			got, err := p.Timeline(context.Background(), jobID, "", 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			want := c.want
			want.Pos, want.EventID = 1, "m1"
			if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
				t.Fatalf("timeline:\n got %+v\nwant [%+v]", got, want)
			}
		})
	}
	t.Run("pointers to events are accepted", func(t *testing.T) {
		p, _ := newProjection(t)
		e := fail(5, 1, 4, "boom")
		applyAll(t, p, []delivery{{id: "m1", ev: &e}})
		if subs := allSubJobs(t, p); len(subs) != 1 || subs[0].LastError != "boom" {
			t.Fatalf("sub-jobs after a pointer event: %+v", subs)
		}
	})
}

func TestEachMessageCountsOnce(t *testing.T) {
	p, _ := newProjection(t)
	applyAll(t, p, []delivery{
		{"a", started("acme", 1, 0)},
		{"b", fail(0, 1, 5, "boom")},
		{"b", fail(0, 1, 5, "boom")}, // the transport delivered it again
		{"a", started("acme", 1, 0)},
		{"c", fail(0, 1, 6, "boom")}, // the worker reported twice: a message of its own
		{"t", job.Tick{JobID: jobID, At: ts(7)}},
	})
	entries, err := p.Timeline(context.Background(), jobID, "acme", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i, e := range entries {
		if e.Pos != int64(i+1) {
			t.Fatalf("entry %d at position %d", i, e.Pos)
		}
		ids = append(ids, e.EventID)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(ids, want) {
		t.Fatalf("timeline holds %v, want %v (ticks are not recorded)", ids, want)
	}
	subs := allSubJobs(t, p)
	if len(subs) != 1 || subs[0].FailedAttempts != 1 || !subs[0].LastErrorAt.Equal(ts(5)) {
		t.Fatalf("sub-jobs: %+v", subs)
	}
}

func TestFailedApplyChangesNothing(t *testing.T) {
	p, st := newProjection(t)
	ctx := context.Background()
	applyAll(t, p, []delivery{{"a", started("acme", 1, 0)}})
	st.failSubJob = true
	if err := p.Apply(ctx, "b", ok(0, 1, 3, time.Second)); !errors.Is(err, errInjected) {
		t.Fatalf("Apply with a failing store: %v", err)
	}
	if sum, err := p.Job(ctx, jobID, ""); err != nil || sum.Events != 1 || len(sum.SubJobs) != 0 {
		t.Fatalf("after a failed Apply: %+v, %v", sum, err)
	}
	// The transport delivers the message again: it is applied once.
	applyAll(t, p, []delivery{{"b", ok(0, 1, 3, time.Second)}, {"b", ok(0, 1, 3, time.Second)}})
	if sum, err := p.Job(ctx, jobID, ""); err != nil || sum.Events != 2 || sum.SubJobs[job.SubJobSucceeded] != 1 {
		t.Fatalf("after the redelivery: %+v, %v", sum, err)
	}
}

func TestReadSide(t *testing.T) {
	ctx := context.Background()
	p, _ := newProjection(t)
	events := []job.Message{started("acme", 1, 0), job.Step2Started{JobID: jobID, Total: 6, Seq: 2, At: ts(1)}}
	for i := range int64(6) {
		if i%2 == 0 {
			events = append(events, ok(i, 1, 10, time.Second))
		} else {
			events = append(events, fail(i, 1, 10, "odd"))
		}
	}
	applyAll(t, p, numbered(events...))
	// A job whose JobStarted has not arrived yet: its owner is unknown.
	applyAll(t, p, []delivery{{"orphan", job.Step2SubjobCompleted{JobID: "job-2", Index: 0, Attempt: 1, At: ts(3)}}})

	t.Run("tenants see only their jobs", func(t *testing.T) {
		for _, c := range []struct {
			job, tenant string
			found       bool
		}{
			{jobID, "acme", true}, {jobID, "", true}, {jobID, "globex", false}, {"job-2", "acme", false},
			{"job-2", "", true}, {"job-3", "", false},
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
	t.Run("pages", func(t *testing.T) {
		var positions []int64
		for after := int64(0); ; {
			page, err := p.Timeline(ctx, jobID, "acme", after, 3)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, e := range page {
				positions = append(positions, e.Pos)
			}
			after = page[len(page)-1].Pos
		}
		if want := []int64{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(positions, want) {
			t.Fatalf("paged positions %v, want %v", positions, want)
		}
		var indexes []int64
		for after := int64(-1); ; {
			page, err := p.SubJobs(ctx, jobID, "acme", job.SubJobRetryWait, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, s := range page {
				indexes = append(indexes, s.Index)
			}
			after = page[len(page)-1].Index
		}
		if want := []int64{1, 3, 5}; !slices.Equal(indexes, want) {
			t.Fatalf("waiting sub-jobs %v, want %v", indexes, want)
		}
	})
	t.Run("counts", func(t *testing.T) {
		sum, err := p.Job(ctx, jobID, "acme")
		if err != nil {
			t.Fatal(err)
		}
		want := map[job.SubJobState]int64{job.SubJobSucceeded: 3, job.SubJobRetryWait: 3}
		if sum.Events != 8 || sum.Total != 6 || !reflect.DeepEqual(sum.SubJobs, want) {
			t.Fatalf("summary %+v, want 8 events, total 6, sub-jobs %v", sum, want)
		}
	})
	t.Run("an unknown state is refused", func(t *testing.T) {
		if _, err := p.SubJobs(ctx, jobID, "", "DONE", -1, 10); err == nil {
			t.Fatal("SubJobs with state DONE: no error")
		}
	})
	t.Run("pages are capped", func(t *testing.T) {
		p, _ := newProjection(t)
		var ds []delivery
		for i := range timeline.MaxPage + 20 {
			ds = append(ds, delivery{fmt.Sprint(i), ok(int64(i), 1, i, time.Second)})
		}
		applyAll(t, p, ds)
		for _, limit := range []int{0, -1, timeline.MaxPage + 1} {
			entries, err := p.Timeline(ctx, jobID, "", 0, limit)
			if err != nil || len(entries) != timeline.MaxPage {
				t.Fatalf("Timeline with limit %d: %d entries, %v", limit, len(entries), err)
			}
			subs, err := p.SubJobs(ctx, jobID, "", "", -1, limit)
			if err != nil || len(subs) != timeline.MaxPage {
				t.Fatalf("SubJobs with limit %d: %d sub-jobs, %v", limit, len(subs), err)
			}
		}
	})
}

func TestDetailIsCut(t *testing.T) {
	p, _ := newProjection(t)
	long := strings.Repeat("a", timeline.MaxDetail-1) + "é and more" // é straddles the limit
	applyAll(t, p, numbered(fail(0, 1, 1, long), job.JobFailed{JobID: jobID, Reason: long, Seq: 2, At: ts(2)}))
	entries, err := p.Timeline(context.Background(), jobID, "", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("a", timeline.MaxDetail-1)
	for _, e := range entries {
		if e.Detail != want || !utf8.ValidString(e.Detail) {
			t.Fatalf("%s detail of %d bytes, want the first %d", e.Kind, len(e.Detail), len(want))
		}
	}
	sum, _ := p.Job(context.Background(), jobID, "")
	if subs := allSubJobs(t, p); sum.Error != want || subs[0].LastError != want {
		t.Fatalf("job error %d bytes, last error %d bytes", len(sum.Error), len(subs[0].LastError))
	}
}

func TestProjectionContract(t *testing.T) {
	if _, err := timeline.New(nil); err == nil {
		t.Fatal("New(nil): no error")
	}
	p, _ := newProjection(t)
	if p.Name() != "status" {
		t.Fatalf("Name() = %q, want the consumer group status", p.Name())
	}
	if err := p.Apply(context.Background(), "", ok(0, 1, 1, 0)); err == nil {
		t.Fatal("Apply without a message id: no error")
	}
	applyAll(t, p, numbered(started("acme", 1, 0), ok(0, 1, 1, 0)))
	if err := p.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Job(context.Background(), jobID, ""); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("job after Reset: %v", err)
	}
}
