package job_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func testPolicy() job.Policy {
	return job.Policy{
		SubJobTimeout: time.Minute,
		StepTimeout:   10 * time.Minute,
		MaxAttempts:   3,
		Backoff:       job.Backoff{Initial: time.Second, Max: 10 * time.Second, Multiplier: 2},
	}
}

// immediate is a policy whose retries need no wait, so a failure answers with the next attempt at once.
func immediate(p job.Policy) job.Policy {
	p.Backoff = job.Backoff{Multiplier: 1}
	return p
}

func seqOf(m job.Message) (int64, bool) {
	switch e := m.(type) {
	case job.JobStarted:
		return e.Seq, true
	case job.Step2Started:
		return e.Seq, true
	case job.Step2Completed:
		return e.Seq, true
	case job.JobCompleted:
		return e.Seq, true
	case job.JobFailed:
		return e.Seq, true
	case job.JobCancelled:
		return e.Seq, true
	case job.AttemptTimedOut:
		return e.Seq, true
	}
	return 0, false
}

func eventTypes(fx job.Effects) []string {
	out := make([]string, len(fx.Events))
	for i, e := range fx.Events {
		out[i] = fmt.Sprintf("%T", e)
	}
	return out
}

func wantEvents(t *testing.T, fx job.Effects, want ...string) {
	t.Helper()
	got := eventTypes(fx)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func wantOutcome(t *testing.T, got, want job.Outcome) {
	t.Helper()
	if got != want {
		t.Fatalf("outcome = %s, want %s", got, want)
	}
}

func newJob(t *testing.T, p job.Policy) *job.Job {
	t.Helper()
	j, _, err := job.New("job-1", "acme", "invoices", []byte("in"), p, t0)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// step2 is a job whose step 2 just started: subs holds every sub-job, those in the first window RUNNING.
type step2 struct {
	j      *job.Job
	subs   map[int64]*job.SubJob
	window int
	now    time.Time
	fx     job.Effects
	cmds   []job.Message // the first window's commands
}

func startStep2(t *testing.T, p job.Policy, total int64, window int) *step2 {
	t.Helper()
	j := newJob(t, p)
	if _, o := j.StartStep1(t0); o != job.Applied {
		t.Fatalf("StartStep1 = %s", o)
	}
	subs := make(map[int64]*job.SubJob, total)
	for i := range total {
		subs[i] = &job.SubJob{JobID: j.ID, Index: i, State: job.SubJobPending, Input: []byte{byte(i)}}
	}
	s := &step2{j: j, subs: subs, window: window, now: t0.Add(time.Second)}
	fx, o := j.CompleteStep1(total, window, s.now)
	wantOutcome(t, o, job.Applied)
	s.fx = fx
	s.cmds = s.dispatch(t, fx)
	return s
}

// dispatch starts every sub-job of fx.Dispatch, like the manager does, and returns the commands.
func (s *step2) dispatch(t *testing.T, fx job.Effects) []job.Message {
	t.Helper()
	var pending []*job.SubJob
	for i := fx.Dispatch.From; i < fx.Dispatch.To; i++ {
		sub := s.subs[i]
		if sub.State != job.SubJobPending {
			t.Fatalf("dispatch of sub-job %d in state %s", i, sub.State)
		}
		pending = append(pending, sub)
	}
	return s.j.Dispatch(pending, s.now)
}

func (s *step2) succeed(t *testing.T, i int64) (job.Effects, job.Outcome) {
	t.Helper()
	fx, o := s.j.SubJobSucceeded(s.subs[i], []byte("ok"), s.window, s.now, s.now)
	s.dispatch(t, fx)
	return fx, o
}

func (s *step2) failAttempt(t *testing.T, i int64, attempt int) (job.Effects, job.Outcome) {
	t.Helper()
	fx, o := s.j.SubJobFailed(s.subs[i], attempt, "boom", s.window, s.now, s.now)
	s.dispatch(t, fx)
	return fx, o
}

func TestNew(t *testing.T) {
	j, fx, err := job.New("job-1", "acme", "invoices", []byte("in"), job.Policy{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != job.StatePending || j.Seq != 1 || !j.CreatedAt.Equal(t0) {
		t.Fatalf("new job = state %s seq %d created %s", j.State, j.Seq, j.CreatedAt)
	}
	if j.Policy != job.DefaultPolicy() {
		t.Errorf("policy not defaulted: %+v", j.Policy)
	}
	wantEvents(t, fx, "job.JobStarted")
	started := fx.Events[0].(job.JobStarted)
	if started != (job.JobStarted{JobID: "job-1", Tenant: "acme", Type: "invoices", Seq: 1, At: t0}) {
		t.Errorf("JobStarted = %+v", started)
	}
	if len(fx.Commands) != 0 || fx.Dispatch.Len() != 0 {
		t.Errorf("New asked for more than an event: %+v", fx)
	}

	for _, tt := range []struct {
		name, id, typ string
		p             job.Policy
	}{
		{"no id", "", "t", job.Policy{}},
		{"no type", "id", "", job.Policy{}},
		{"invalid policy", "id", "t", job.Policy{MaxAttempts: -1}},
		{"percent out of range", "id", "t", job.Policy{ToleratedFailurePercent: 101}},
	} {
		if j, _, err := job.New(tt.id, "acme", tt.typ, nil, tt.p, t0); err == nil || j != nil {
			t.Errorf("%s: New = %v, %v; want an error", tt.name, j, err)
		}
	}
}

func TestStartStep1(t *testing.T) {
	j := newJob(t, testPolicy())
	now := t0.Add(time.Second)
	fx, o := j.StartStep1(now)
	wantOutcome(t, o, job.Applied)
	wantEvents(t, fx)
	if len(fx.Commands) != 1 {
		t.Fatalf("commands = %v", fx.Commands)
	}
	want := job.RunStep1{JobID: "job-1", Tenant: "acme", Type: "invoices", Attempt: 1, Input: []byte("in")}
	if got := fx.Commands[0].(job.RunStep1); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("RunStep1 = %+v, want %+v", got, want)
	}
	if j.State != job.StateStep1Running || j.StepAttempt != 1 || !j.StepDeadline.Equal(now.Add(10*time.Minute)) || !j.Steps[0].StartedAt.Equal(now) {
		t.Errorf("after StartStep1: %+v", j)
	}
	fx, o = j.StartStep1(now.Add(time.Second))
	wantOutcome(t, o, job.Duplicate)
	if len(fx.Commands)+len(fx.Events) != 0 || j.StepAttempt != 1 {
		t.Errorf("second StartStep1 did something: %+v attempt %d", fx, j.StepAttempt)
	}
}

func TestCompleteStep1(t *testing.T) {
	tests := []struct {
		total    int64
		window   int
		dispatch int64
	}{
		{1, 1, 1}, {3, 10, 3}, {10, 10, 10}, {11, 10, 10}, {100, 4, 4}, {5, 1, 1},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("total=%d window=%d", tt.total, tt.window), func(t *testing.T) {
			s := startStep2(t, testPolicy(), tt.total, tt.window)
			j := s.j
			wantEvents(t, s.fx, "job.Step2Started")
			if ev := s.fx.Events[0].(job.Step2Started); ev.Total != tt.total || ev.Seq != 2 {
				t.Errorf("Step2Started = %+v", ev)
			}
			if s.fx.Dispatch != (job.Range{From: 0, To: tt.dispatch}) {
				t.Errorf("Dispatch = %+v, want [0,%d)", s.fx.Dispatch, tt.dispatch)
			}
			if j.State != job.StateStep2Running || j.Total != tt.total || j.InFlight != tt.dispatch || j.NextIndex != tt.dispatch {
				t.Errorf("job = state %s total %d inflight %d next %d", j.State, j.Total, j.InFlight, j.NextIndex)
			}
			if j.StepAttempt != 0 || !j.StepDeadline.IsZero() {
				t.Errorf("step 1 attempt left over: %d %s", j.StepAttempt, j.StepDeadline)
			}
			for i := range tt.total {
				wantState := job.SubJobPending
				if i < tt.dispatch {
					wantState = job.SubJobRunning
				}
				if got := s.subs[i]; got.State != wantState || (i < tt.dispatch && (got.Attempt != 1 || !got.Deadline.Equal(s.now.Add(time.Minute)))) {
					t.Errorf("sub-job %d = %+v", i, got)
				}
			}
			fx, o := j.CompleteStep1(tt.total, tt.window, s.now)
			wantOutcome(t, o, job.Duplicate)
			if len(fx.Events) != 0 || fx.Dispatch.Len() != 0 || j.NextIndex != tt.dispatch {
				t.Errorf("second CompleteStep1 did something: %+v", fx)
			}
		})
	}

	t.Run("total 0 closes step 2 at once", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 0, 10)
		wantEvents(t, s.fx, "job.Step2Started", "job.Step2Completed")
		done := s.fx.Events[1].(job.Step2Completed)
		if done.Succeeded != 0 || done.Failed != 0 || done.Seq != 3 || !done.At.Equal(s.now) || !done.LastOutcomeAt.Equal(s.now) {
			t.Errorf("Step2Completed = %+v", done)
		}
		if s.fx.Dispatch.Len() != 0 || s.j.State != job.StateStep3Running || s.j.InFlight != 0 {
			t.Errorf("job = %s dispatch %+v", s.j.State, s.fx.Dispatch)
		}
	})

	t.Run("before step 1 started", func(t *testing.T) {
		j := newJob(t, testPolicy())
		_, o := j.CompleteStep1(3, 2, t0)
		wantOutcome(t, o, job.Duplicate)
		if j.State != job.StatePending {
			t.Errorf("state = %s", j.State)
		}
	})

	t.Run("after cancel is late", func(t *testing.T) {
		j := newJob(t, testPolicy())
		j.StartStep1(t0)
		if _, err := j.Cancel("stop", t0); err != nil {
			t.Fatal(err)
		}
		fx, o := j.CompleteStep1(3, 2, t0)
		wantOutcome(t, o, job.Late)
		if j.State != job.StateCancelled || len(fx.Events) != 0 || fx.Dispatch.Len() != 0 {
			t.Errorf("late CompleteStep1 changed the job: %s %+v", j.State, fx)
		}
	})
}

func TestDispatchGroupsSubJobsIntoCommands(t *testing.T) {
	tests := []struct {
		name       string
		perCommand int
		total      int64
		window     int
		want       []int // sub-jobs per command of the first window
	}{
		{"one per command", 1, 5, 5, []int{1, 1, 1, 1, 1}},
		{"even chunks", 2, 4, 4, []int{2, 2}},
		{"last chunk smaller", 3, 7, 7, []int{3, 3, 1}},
		{"window smaller than a chunk", 8, 20, 5, []int{5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			p.SubJobsPerCommand = tt.perCommand
			s := startStep2(t, p, tt.total, tt.window)
			var sizes []int
			next := int64(0)
			for _, c := range s.cmds {
				rc := c.(job.RunSubJobs)
				sizes = append(sizes, len(rc.Runs))
				if rc.JobID != s.j.ID || rc.Tenant != s.j.Tenant || rc.Type != s.j.Type {
					t.Fatalf("command = %+v", rc)
				}
				for _, r := range rc.Runs {
					sub := s.subs[r.Index]
					if r.Index != next || r.Attempt != 1 || string(r.Input) != string(sub.Input) {
						t.Fatalf("run %+v, want index %d attempt 1", r, next)
					}
					// The command's runs go one after another: each deadline allows for all of them.
					wantDeadline := s.now.Add(time.Duration(len(rc.Runs)) * p.SubJobTimeout)
					if sub.State != job.SubJobRunning || sub.Attempt != 1 || !sub.Deadline.Equal(wantDeadline) {
						t.Fatalf("sub-job %d after dispatch = %+v, want running until %s", r.Index, sub, wantDeadline)
					}
					next++
				}
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.want) {
				t.Fatalf("command sizes = %v, want %v", sizes, tt.want)
			}
		})
	}
}

func TestDispatchBoundsTheInputsOfACommand(t *testing.T) {
	p := testPolicy()
	p.SubJobsPerCommand = 10
	j := newJob(t, p)
	const kib = 1 << 10
	sizes := []int{100 * kib, 100 * kib, 100 * kib, 300 * kib, 1, 1}
	subs := make([]*job.SubJob, len(sizes))
	for i, n := range sizes {
		subs[i] = &job.SubJob{JobID: j.ID, Index: int64(i), State: job.SubJobPending, Input: make([]byte, n)}
	}
	var got []int
	for _, c := range j.Dispatch(subs, t0) {
		got = append(got, len(c.(job.RunSubJobs).Runs))
	}
	// 100+100 KiB fit in 256 KiB, a third does not; 300 KiB goes alone; the small ones follow together.
	if fmt.Sprint(got) != "[2 1 1 2]" {
		t.Fatalf("command sizes = %v, want [2 1 1 2]", got)
	}
}

func TestSubJobSucceeded(t *testing.T) {
	t.Run("counts once and refills the window", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 10, 4)
		// window 4: refills wait for a quarter window (1) to be free.
		fx, o := s.succeed(t, 0)
		wantOutcome(t, o, job.Applied)
		if fx.Dispatch != (job.Range{From: 4, To: 5}) {
			t.Errorf("refill = %+v, want [4,5)", fx.Dispatch)
		}
		if sub := s.subs[0]; sub.State != job.SubJobSucceeded || string(sub.Result) != "ok" || !sub.FinishedAt.Equal(s.now) {
			t.Errorf("sub-job = %+v", sub)
		}
		if s.j.Succeeded != 1 || s.j.InFlight != 4 || s.j.NextIndex != 5 {
			t.Errorf("job = succeeded %d inflight %d next %d", s.j.Succeeded, s.j.InFlight, s.j.NextIndex)
		}
		fx, o = s.succeed(t, 0)
		wantOutcome(t, o, job.Duplicate)
		if s.j.Succeeded != 1 || s.j.Duplicates != 1 || s.j.InFlight != 4 || fx.Dispatch.Len() != 0 {
			t.Errorf("duplicate changed the job: %+v", s.j)
		}
	})

	t.Run("large window refills in quarter batches", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 100, 8)
		fx, _ := s.succeed(t, 0)
		if fx.Dispatch.Len() != 0 {
			t.Fatalf("refilled 1 of window 8: %+v", fx.Dispatch)
		}
		fx, _ = s.succeed(t, 1)
		if fx.Dispatch != (job.Range{From: 8, To: 10}) {
			t.Fatalf("refill = %+v, want [8,10)", fx.Dispatch)
		}
		if s.j.InFlight != 8 {
			t.Errorf("inflight = %d", s.j.InFlight)
		}
	})

	t.Run("last outcome closes step 2", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 3, 10)
		s.succeed(t, 2)
		s.succeed(t, 0)
		s.now = s.now.Add(time.Minute)
		outcomeAt := s.now.Add(-time.Second)
		fx, o := s.j.SubJobSucceeded(s.subs[1], nil, s.window, outcomeAt, s.now)
		wantOutcome(t, o, job.Applied)
		wantEvents(t, fx, "job.Step2Completed")
		done := fx.Events[0].(job.Step2Completed)
		if done.Succeeded != 3 || done.Failed != 0 || !done.LastOutcomeAt.Equal(outcomeAt) || !done.At.Equal(s.now) {
			t.Errorf("Step2Completed = %+v", done)
		}
		if s.j.State != job.StateStep3Running || s.j.InFlight != 0 || !s.j.Steps[1].FinishedAt.Equal(s.now) || !s.j.Steps[2].StartedAt.Equal(s.now) {
			t.Errorf("job after step 2 = %+v", s.j)
		}
		// Reports after step 2 closed are late, whatever they say.
		seq := s.j.Seq
		_, o = s.succeed(t, 1)
		wantOutcome(t, o, job.Late)
		_, o = s.failAttempt(t, 1, 1)
		wantOutcome(t, o, job.Late)
		if s.j.Late != 2 || s.j.Succeeded != 3 || s.j.Duplicates != 0 || s.j.Seq != seq {
			t.Errorf("late reports changed the job: %+v", s.j)
		}
	})

	t.Run("after cancel is late", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 3, 10)
		if _, err := s.j.Cancel("stop", s.now); err != nil {
			t.Fatal(err)
		}
		fx, o := s.succeed(t, 0)
		wantOutcome(t, o, job.Late)
		if s.j.Late != 1 || s.j.Succeeded != 0 || s.j.InFlight != 3 || s.subs[0].State != job.SubJobRunning || len(fx.Events) != 0 {
			t.Errorf("late success changed the job: %+v sub %+v", s.j, s.subs[0])
		}
	})

	t.Run("success from an older attempt of a waiting sub-job counts", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 2, 10)
		_, o := s.failAttempt(t, 0, 1)
		wantOutcome(t, o, job.Applied)
		if s.subs[0].State != job.SubJobRetryWait {
			t.Fatalf("sub-job = %s", s.subs[0].State)
		}
		_, o = s.succeed(t, 0) // attempt 1 reports success after all (at-least-once queue)
		wantOutcome(t, o, job.Applied)
		if s.subs[0].State != job.SubJobSucceeded || s.subs[0].LastError != "" || s.j.Succeeded != 1 || s.j.InFlight != 1 {
			t.Errorf("job %+v sub %+v", s.j, s.subs[0])
		}
		// The retry is no longer due.
		if _, o := s.j.RetryDue(s.subs[0], s.now.Add(time.Hour)); o != job.Duplicate {
			t.Errorf("RetryDue of a succeeded sub-job = %s", o)
		}
	})

	t.Run("success of a timed-out attempt while its retry runs counts", func(t *testing.T) {
		s := startStep2(t, immediate(testPolicy()), 1, 10)
		s.now = s.now.Add(2 * time.Minute)
		fx, o := s.j.SubJobTimedOut(s.subs[0], s.window, s.now)
		wantOutcome(t, o, job.Applied)
		if len(fx.Commands) != 1 || s.subs[0].Attempt != 2 {
			t.Fatalf("no retry: %+v", fx)
		}
		fx, o = s.succeed(t, 0)
		wantOutcome(t, o, job.Applied)
		wantEvents(t, fx, "job.Step2Completed")
		_, o = s.succeed(t, 0) // attempt 2 reports too
		wantOutcome(t, o, job.Late)
	})

	t.Run("report for a never-dispatched sub-job is a duplicate", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 5, 2)
		_, o := s.succeed(t, 4)
		wantOutcome(t, o, job.Duplicate)
		if s.subs[4].State != job.SubJobPending || s.j.Succeeded != 0 {
			t.Errorf("pending sub-job changed: %+v", s.subs[4])
		}
	})
}

func TestSubJobFailedRetriesWithBackoff(t *testing.T) {
	s := startStep2(t, testPolicy(), 2, 10)
	sub := s.subs[0]
	waits := []time.Duration{time.Second, 2 * time.Second}
	for attempt := 1; attempt < 3; attempt++ {
		fx, o := s.failAttempt(t, 0, attempt)
		wantOutcome(t, o, job.Applied)
		wait := waits[attempt-1]
		if len(fx.Commands)+len(fx.Events) != 0 {
			t.Fatalf("attempt %d: a retry with backoff was started at once: %+v", attempt, fx)
		}
		if sub.State != job.SubJobRetryWait || !sub.NextAttemptAt.Equal(s.now.Add(wait)) || !sub.Deadline.IsZero() || sub.LastError != "boom" {
			t.Fatalf("attempt %d: sub-job = %+v", attempt, sub)
		}
		if s.j.InFlight != 2 || s.j.Failed != 0 {
			t.Fatalf("attempt %d: job counted a retryable failure: %+v", attempt, s.j)
		}
		// A second copy of the same failure report is stale now.
		if _, o := s.failAttempt(t, 0, attempt); o != job.Duplicate {
			t.Fatalf("repeated failure of attempt %d = %s", attempt, o)
		}
		// Not due yet.
		if fx, o := s.j.RetryDue(sub, s.now.Add(wait-time.Nanosecond)); o != job.Duplicate || len(fx.Commands) != 0 {
			t.Fatalf("RetryDue before due = %s %+v", o, fx)
		}
		s.now = s.now.Add(wait)
		fx, o = s.j.RetryDue(sub, s.now)
		wantOutcome(t, o, job.Applied)
		if len(fx.Commands) != 1 {
			t.Fatalf("RetryDue commands = %v", fx.Commands)
		}
		if cmd := onlyRun(t, fx.Commands[0]); cmd.Index != 0 || cmd.Attempt != attempt+1 || string(cmd.Input) != "\x00" {
			t.Fatalf("retry command = %+v", cmd)
		}
		if sub.State != job.SubJobRunning || sub.Attempt != attempt+1 || !sub.Deadline.Equal(s.now.Add(time.Minute)) || !sub.NextAttemptAt.IsZero() {
			t.Fatalf("sub-job after retry = %+v", sub)
		}
		if _, o := s.j.RetryDue(sub, s.now); o != job.Duplicate {
			t.Fatalf("second RetryDue = %s", o)
		}
		if s.j.Retries != int64(attempt) {
			t.Fatalf("retries = %d", s.j.Retries)
		}
	}
	if s.j.Duplicates != 2 {
		t.Errorf("duplicates = %d, want 2", s.j.Duplicates)
	}
	// The last attempt fails for good; nothing is tolerated, so the job fails.
	fx, o := s.failAttempt(t, 0, 3)
	wantOutcome(t, o, job.Applied)
	wantEvents(t, fx, "job.JobFailed")
	if sub.State != job.SubJobFailed || !sub.FinishedAt.Equal(s.now) {
		t.Errorf("sub-job = %+v", sub)
	}
	if s.j.State != job.StateFailed || s.j.Failed != 1 || s.j.InFlight != 1 || s.j.Error == "" || !s.j.EndedAt.Equal(s.now) {
		t.Errorf("job = %+v", s.j)
	}
	if _, o := s.succeed(t, 1); o != job.Late {
		t.Errorf("report after the job failed = %s", o)
	}
}

func TestSubJobFailedStaleAttempt(t *testing.T) {
	s := startStep2(t, immediate(testPolicy()), 1, 10)
	fx, o := s.failAttempt(t, 0, 1)
	wantOutcome(t, o, job.Applied)
	if len(fx.Commands) != 1 || onlyRun(t, fx.Commands[0]).Attempt != 2 {
		t.Fatalf("zero backoff did not retry at once: %+v", fx)
	}
	for _, attempt := range []int{1, 3, 0} {
		fx, o := s.failAttempt(t, 0, attempt)
		if o != job.Duplicate || len(fx.Commands) != 0 {
			t.Errorf("failure of attempt %d while 2 runs = %s %+v", attempt, o, fx)
		}
	}
	if s.subs[0].Attempt != 2 || s.subs[0].State != job.SubJobRunning || s.j.Duplicates != 3 || s.j.Retries != 1 {
		t.Errorf("stale failures changed the job: %+v %+v", s.j, s.subs[0])
	}
	// Failure of a finished sub-job is a duplicate too.
	s.succeed(t, 0)
	if _, o := s.failAttempt(t, 0, 2); o != job.Late {
		t.Errorf("failure after step 2 closed = %s", o)
	}
}

func TestToleratedFailures(t *testing.T) {
	tests := []struct {
		name      string
		count     int64
		percent   float64
		total     int64
		failures  int64
		wantState job.State
	}{
		{"none tolerated, one fails", 0, 0, 5, 1, job.StateFailed},
		{"count tolerated exactly", 2, 0, 5, 2, job.StateStep3Running},
		{"count exceeded", 2, 0, 5, 3, job.StateFailed},
		{"percent tolerated exactly", 0, 20, 10, 2, job.StateStep3Running},
		{"percent exceeded", 0, 20, 10, 3, job.StateFailed},
		{"larger allowance wins", 1, 30, 10, 3, job.StateStep3Running},
		{"every sub-job may fail", 0, 100, 4, 4, job.StateStep3Running},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			p.MaxAttempts = 1
			p.ToleratedFailures, p.ToleratedFailurePercent = tt.count, tt.percent
			s := startStep2(t, p, tt.total, int(tt.total))
			var events []string
			for i := range tt.total {
				var fx job.Effects
				if i < tt.failures {
					fx, _ = s.failAttempt(t, i, 1)
				} else {
					fx, _ = s.succeed(t, i)
				}
				events = append(events, eventTypes(fx)...)
				if s.j.State.Terminal() {
					break
				}
			}
			if s.j.State != tt.wantState {
				t.Fatalf("state = %s, want %s (%s)", s.j.State, tt.wantState, s.j.Error)
			}
			if tt.wantState == job.StateFailed {
				if fmt.Sprint(events) != "[job.JobFailed]" || s.j.Failed != p.FailureAllowance(tt.total)+1 {
					t.Errorf("events %v failed %d", events, s.j.Failed)
				}
				return
			}
			if fmt.Sprint(events) != "[job.Step2Completed]" {
				t.Fatalf("events = %v", events)
			}
			if s.j.Failed != tt.failures || s.j.Succeeded != tt.total-tt.failures {
				t.Errorf("succeeded %d failed %d", s.j.Succeeded, s.j.Failed)
			}
		})
	}
}

func TestSubJobTimedOut(t *testing.T) {
	s := startStep2(t, testPolicy(), 2, 10)
	sub := s.subs[0]
	deadline := sub.Deadline
	fx, o := s.j.SubJobTimedOut(sub, s.window, deadline.Add(-time.Nanosecond))
	if o != job.Duplicate || len(fx.Commands) != 0 || sub.State != job.SubJobRunning || s.j.TimedOut != 0 {
		t.Fatalf("time-out before the deadline: %s %+v", o, sub)
	}
	fx, o = s.j.SubJobTimedOut(sub, s.window, deadline)
	wantOutcome(t, o, job.Applied)
	if sub.State != job.SubJobRetryWait || !sub.NextAttemptAt.Equal(deadline.Add(time.Second)) || s.j.TimedOut != 1 || sub.LastError == "" {
		t.Fatalf("after time-out: %+v timedOut %d", sub, s.j.TimedOut)
	}
	if len(fx.Commands) != 0 {
		t.Errorf("backoff retry started at once: %+v", fx)
	}
	if _, o := s.j.SubJobTimedOut(sub, s.window, deadline.Add(time.Hour)); o != job.Duplicate {
		t.Errorf("time-out of a waiting sub-job = %s", o)
	}

	t.Run("zero backoff retries at once", func(t *testing.T) {
		s := startStep2(t, immediate(testPolicy()), 1, 10)
		fx, o := s.j.SubJobTimedOut(s.subs[0], s.window, s.subs[0].Deadline.Add(time.Second))
		wantOutcome(t, o, job.Applied)
		if len(fx.Commands) != 1 || onlyRun(t, fx.Commands[0]).Attempt != 2 || s.j.Retries != 1 {
			t.Fatalf("fx = %+v", fx)
		}
	})

	t.Run("last attempt timing out fails the sub-job", func(t *testing.T) {
		p := testPolicy()
		p.MaxAttempts, p.ToleratedFailures = 1, 1
		s := startStep2(t, p, 1, 10)
		fx, o := s.j.SubJobTimedOut(s.subs[0], s.window, s.subs[0].Deadline)
		wantOutcome(t, o, job.Applied)
		wantEvents(t, fx, "job.AttemptTimedOut", "job.Step2Completed")
		if to := fx.Events[0].(job.AttemptTimedOut); to.Step != 2 || to.Index != 0 || to.Attempt != 1 {
			t.Errorf("time-out event = %+v", to)
		}
		if s.subs[0].State != job.SubJobFailed || s.j.Failed != 1 {
			t.Errorf("sub %+v job %+v", s.subs[0], s.j)
		}
	})
}

func TestStep3(t *testing.T) {
	s := startStep2(t, testPolicy(), 0, 10)
	j := s.j
	// Step 3 cannot complete before it was sent to a worker.
	if _, o := j.CompleteStep3(nil, s.now); o != job.Duplicate {
		t.Fatalf("CompleteStep3 before StartStep3 = %s", o)
	}
	if _, o := j.Tick(s.now.Add(time.Hour)); o != job.Duplicate {
		t.Fatalf("Tick before StartStep3 = %s", o)
	}
	fx, o := j.StartStep3(s.now)
	wantOutcome(t, o, job.Applied)
	if len(fx.Commands) != 1 || fx.Commands[0] != (job.RunStep3{JobID: "job-1", Tenant: "acme", Type: "invoices", Attempt: 1}) {
		t.Fatalf("StartStep3 commands = %+v", fx.Commands)
	}
	if fx, o := j.StartStep3(s.now); o != job.Duplicate || len(fx.Commands) != 0 {
		t.Fatalf("second StartStep3 = %s %+v", o, fx)
	}
	end := s.now.Add(time.Minute)
	fx, o = j.CompleteStep3([]byte("out"), end)
	wantOutcome(t, o, job.Applied)
	wantEvents(t, fx, "job.JobCompleted")
	if ev := fx.Events[0].(job.JobCompleted); ev.Seq != 4 || !ev.At.Equal(end) {
		t.Errorf("JobCompleted = %+v", ev)
	}
	if j.State != job.StateCompleted || string(j.Output) != "out" || !j.EndedAt.Equal(end) || !j.Steps[2].FinishedAt.Equal(end) || j.Progress() != 1 {
		t.Errorf("job = %+v", j)
	}
	if _, o := j.CompleteStep3(nil, end); o != job.Duplicate {
		t.Errorf("second CompleteStep3 = %s", o)
	}
	if _, o := j.StartStep3(end); o != job.Late {
		t.Errorf("StartStep3 after completion = %s", o)
	}
	if string(j.Output) != "out" {
		t.Errorf("output overwritten")
	}

	t.Run("after failure is late", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 0, 10)
		s.j.StartStep3(s.now)
		s.j.Cancel("x", s.now)
		if _, o := s.j.CompleteStep3(nil, s.now); o != job.Late {
			t.Errorf("CompleteStep3 after cancel = %s", o)
		}
	})
}

func TestStepAttemptFailed(t *testing.T) {
	for _, step := range []int{1, 3} {
		t.Run(fmt.Sprintf("step %d", step), func(t *testing.T) {
			var j *job.Job
			now := t0
			if step == 1 {
				j = newJob(t, testPolicy())
				j.StartStep1(now)
			} else {
				s := startStep2(t, testPolicy(), 0, 1)
				j, now = s.j, s.now
				j.StartStep3(now)
			}
			wantState := j.State
			if _, o := j.StepAttemptFailed(4-step, 1, "other step", now); o != job.Duplicate {
				t.Fatalf("failure of the other step = %s", o)
			}
			for attempt := 1; attempt < 3; attempt++ {
				now = now.Add(time.Second)
				fx, o := j.StepAttemptFailed(step, attempt, "boom", now)
				wantOutcome(t, o, job.Applied)
				if len(fx.Commands) != 1 {
					t.Fatalf("no retry: %+v", fx)
				}
				var got int
				switch c := fx.Commands[0].(type) {
				case job.RunStep1:
					got = c.Attempt
				case job.RunStep3:
					got = c.Attempt
				}
				if got != attempt+1 || j.StepAttempt != attempt+1 || !j.StepDeadline.Equal(now.Add(10*time.Minute)) || j.State != wantState {
					t.Fatalf("retry attempt %d, job attempt %d state %s", got, j.StepAttempt, j.State)
				}
				if _, o := j.StepAttemptFailed(step, attempt, "boom", now); o != job.Duplicate {
					t.Fatalf("stale failure = %s", o)
				}
			}
			if j.Retries != 2 {
				t.Errorf("retries = %d", j.Retries)
			}
			fx, o := j.StepAttemptFailed(step, 3, "boom", now)
			wantOutcome(t, o, job.Applied)
			wantEvents(t, fx, "job.JobFailed")
			if j.State != job.StateFailed || len(fx.Commands) != 0 {
				t.Errorf("job = %s, commands %v", j.State, fx.Commands)
			}
			if _, o := j.StepAttemptFailed(step, 3, "boom", now); o != job.Late {
				t.Errorf("failure after the job failed = %s", o)
			}
		})
	}
}

func TestTick(t *testing.T) {
	t.Run("step 1 times out", func(t *testing.T) {
		j := newJob(t, testPolicy())
		if _, o := j.Tick(t0.Add(time.Hour)); o != job.Duplicate {
			t.Fatalf("tick of a pending job = %s", o)
		}
		j.StartStep1(t0)
		if fx, o := j.Tick(j.StepDeadline.Add(-time.Nanosecond)); o != job.Duplicate || len(fx.Commands) != 0 {
			t.Fatalf("tick before the deadline = %s", o)
		}
		now := j.StepDeadline
		fx, o := j.Tick(now)
		wantOutcome(t, o, job.Applied)
		if len(fx.Commands) != 1 || fx.Commands[0].(job.RunStep1).Attempt != 2 || j.TimedOut != 1 || !j.StepDeadline.Equal(now.Add(10*time.Minute)) {
			t.Fatalf("fx %+v job %+v", fx, j)
		}
		if _, o := j.Tick(now); o != job.Duplicate {
			t.Errorf("second tick at the same time = %s", o)
		}
		// Two more time-outs use up the attempts.
		j.Tick(j.StepDeadline)
		fx, o = j.Tick(j.StepDeadline)
		wantOutcome(t, o, job.Applied)
		wantEvents(t, fx, "job.AttemptTimedOut", "job.JobFailed")
		if f := fx.Events[1].(job.JobFailed); f.Counts.TimedOut != 3 || f.Counts.Retries != 2 {
			t.Errorf("final counts = %+v, want 3 time-outs and 2 retries", f.Counts)
		}
		if j.State != job.StateFailed || j.TimedOut != 3 {
			t.Errorf("job = %s timedOut %d", j.State, j.TimedOut)
		}
		if _, o := j.Tick(j.StepDeadline.Add(time.Hour)); o != job.Duplicate {
			t.Errorf("tick of a failed job = %s", o)
		}
	})
	t.Run("step 3 times out", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 0, 1)
		s.j.StartStep3(s.now)
		fx, o := s.j.Tick(s.j.StepDeadline.Add(time.Second))
		wantOutcome(t, o, job.Applied)
		if len(fx.Commands) != 1 || fx.Commands[0].(job.RunStep3).Attempt != 2 {
			t.Fatalf("fx = %+v", fx)
		}
	})
	t.Run("step 2 is left to the sub-jobs", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 3, 1)
		if fx, o := s.j.Tick(s.now.Add(time.Hour)); o != job.Duplicate || len(fx.Commands)+len(fx.Events) != 0 {
			t.Errorf("tick in step 2 = %s %+v", o, fx)
		}
	})
}

func TestCancel(t *testing.T) {
	for _, setup := range []struct {
		name string
		make func(t *testing.T) *job.Job
	}{
		{"pending", func(t *testing.T) *job.Job { return newJob(t, testPolicy()) }},
		{"step 1", func(t *testing.T) *job.Job { j := newJob(t, testPolicy()); j.StartStep1(t0); return j }},
		{"step 2", func(t *testing.T) *job.Job { return startStep2(t, testPolicy(), 3, 1).j }},
		{"step 3", func(t *testing.T) *job.Job { return startStep2(t, testPolicy(), 0, 1).j }},
	} {
		t.Run(setup.name, func(t *testing.T) {
			j := setup.make(t)
			seq := j.Seq
			now := t0.Add(time.Hour)
			fx, err := j.Cancel("no longer needed", now)
			if err != nil {
				t.Fatal(err)
			}
			wantEvents(t, fx, "job.JobCancelled")
			if ev := fx.Events[0].(job.JobCancelled); ev.Seq != seq+1 || ev.Reason != "no longer needed" {
				t.Errorf("JobCancelled = %+v", ev)
			}
			if j.State != job.StateCancelled || !j.EndedAt.Equal(now) || j.Error != "no longer needed" {
				t.Errorf("job = %+v", j)
			}
			fx, err = j.Cancel("again", now)
			if !errors.Is(err, job.ErrTerminal) || len(fx.Events) != 0 || j.Error != "no longer needed" {
				t.Errorf("second Cancel = %v %+v", err, fx)
			}
		})
	}
	t.Run("completed", func(t *testing.T) {
		s := startStep2(t, testPolicy(), 0, 1)
		s.j.StartStep3(s.now)
		s.j.CompleteStep3(nil, s.now)
		if _, err := s.j.Cancel("late", s.now); !errors.Is(err, job.ErrTerminal) || s.j.State != job.StateCompleted {
			t.Errorf("Cancel of a completed job = %v, state %s", err, s.j.State)
		}
	})
}

func TestProgress(t *testing.T) {
	s := startStep2(t, testPolicy(), 4, 4)
	if s.j.Progress() != 0 {
		t.Errorf("progress = %g", s.j.Progress())
	}
	s.succeed(t, 0)
	s.j.Policy.ToleratedFailures = 1
	s.j.Policy.MaxAttempts = 1
	s.failAttempt(t, 1, 1)
	if s.j.Progress() != 0.5 {
		t.Errorf("progress = %g", s.j.Progress())
	}
	if newJob(t, testPolicy()).Progress() != 0 {
		t.Error("progress of a new job")
	}
}

// A whole job, with retries, refills and time-outs, emits events with strictly increasing Seq numbers.
func TestSeqStrictlyIncreasing(t *testing.T) {
	p := testPolicy()
	p.ToleratedFailures = 2
	j, fx, err := job.New("job-1", "acme", "invoices", nil, p, t0)
	if err != nil {
		t.Fatal(err)
	}
	all := fx
	s := &step2{j: j, window: 3, now: t0, subs: map[int64]*job.SubJob{}}
	for i := range int64(7) {
		s.subs[i] = &job.SubJob{JobID: j.ID, Index: i, State: job.SubJobPending}
	}
	collect := func(fx job.Effects, _ job.Outcome) { all.Merge(job.Effects{Events: fx.Events}) }
	collect(j.StartStep1(t0))
	collect(j.Tick(j.StepDeadline)) // step 1 attempt 1 times out
	fx, _ = j.CompleteStep1(7, s.window, t0)
	s.dispatch(t, fx)
	collect(fx, job.Applied)
	for i := range int64(7) {
		if s.subs[i].State == job.SubJobPending {
			t.Fatalf("sub-job %d never dispatched", i)
		}
		if i%3 == 0 { // fail every attempt of a few
			for a := 1; a <= p.MaxAttempts; a++ {
				collect(s.failAttempt(t, i, a))
				s.now = s.now.Add(time.Minute)
				collect(s.j.RetryDue(s.subs[i], s.now))
			}
			continue
		}
		collect(s.succeed(t, i))
	}
	if j.State != job.StateFailed {
		// 3 of 7 failed, 2 tolerated
		t.Fatalf("state = %s", j.State)
	}
	var last int64
	for _, e := range all.Events {
		seq, ok := seqOf(e)
		if !ok {
			t.Fatalf("%T is not a manager event", e)
		}
		if seq <= last {
			t.Fatalf("seq %d after %d in %v", seq, last, eventTypes(all))
		}
		last = seq
	}
	if last != j.Seq {
		t.Errorf("last seq %d, job seq %d", last, j.Seq)
	}
	if got := fmt.Sprint(eventTypes(all)); got != "[job.JobStarted job.AttemptTimedOut job.Step2Started job.JobFailed]" {
		t.Errorf("events = %s", got)
	}
}

// onlyRun is the one sub-job attempt a retry command carries.
func onlyRun(t *testing.T, c job.Message) job.SubJobRun {
	t.Helper()
	rc, ok := c.(job.RunSubJobs)
	if !ok || len(rc.Runs) != 1 {
		t.Fatalf("command = %+v, want RunSubJobs with one run", c)
	}
	return rc.Runs[0]
}
