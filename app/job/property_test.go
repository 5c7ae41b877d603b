package job_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/jobmill/jobmill/app/job"
)

// The property tests drive the pure aggregate the way the manager does, against an in-memory set of
// sub-jobs, with an at-least-once queue that duplicates, reorders and loses reports and a clock that jumps
// past deadlines.

type inputKind int

const (
	inStartStep1 inputKind = iota
	inStep1Done
	inSuccess
	inFailure
	inTick
	inStartStep3
	inStep3Done
)

func (k inputKind) String() string {
	return [...]string{"StartStep1", "Step1Done", "Success", "Failure", "Tick", "StartStep3", "Step3Done"}[k]
}

// input is one message consumed by the manager, with the clock reading when it was consumed.
type input struct {
	kind    inputKind
	index   int64
	attempt int
	at      time.Time
}

func (in input) String() string {
	return fmt.Sprintf("%s(%d#%d @%s)", in.kind, in.index, in.attempt, in.at.Sub(t0))
}

// model is the aggregate plus its sub-jobs, as a store would hold them.
type model struct {
	j      *job.Job
	subs   map[int64]*job.SubJob
	total  int64
	window int
}

func (m *model) clone() *model {
	c := *m
	jc := *m.j
	jc.Input = bytes.Clone(m.j.Input)
	jc.Output = bytes.Clone(m.j.Output)
	c.j = &jc
	c.subs = make(map[int64]*job.SubJob, len(m.subs))
	for i, s := range m.subs {
		sc := *s
		sc.Input = bytes.Clone(s.Input)
		sc.Result = bytes.Clone(s.Result)
		c.subs[i] = &sc
	}
	return &c
}

// apply consumes one message like the manager's reaction would: decide, then dispatch the range. It returns
// everything emitted, with the dispatched commands appended to the decision's commands.
func (m *model) apply(in input) (job.Effects, job.Outcome, error) {
	j := m.j
	var fx job.Effects
	var o job.Outcome
	switch in.kind {
	case inStartStep1:
		fx, o = j.StartStep1(in.at)
	case inStep1Done:
		fx, o = j.CompleteStep1(m.total, m.window, in.at)
	case inSuccess:
		fx, o = j.SubJobSucceeded(m.subs[in.index], []byte{1}, m.window, in.at, in.at)
	case inFailure:
		fx, o = j.SubJobFailed(m.subs[in.index], in.attempt, "boom", m.window, in.at, in.at)
	case inTick:
		fx, o = j.Tick(in.at)
		if j.State == job.StateStep2Running {
			// The store lists what is due before any decision (a fresh dispatch is never in the list).
			var due []*job.SubJob
			for i := range j.NextIndex {
				s := m.subs[i]
				if (s.State == job.SubJobRunning && !in.at.Before(s.Deadline)) ||
					(s.State == job.SubJobRetryWait && !in.at.Before(s.NextAttemptAt)) {
					due = append(due, s)
				}
			}
			for _, s := range due {
				if j.State != job.StateStep2Running {
					break
				}
				var sfx job.Effects
				var so job.Outcome
				if s.State == job.SubJobRunning {
					sfx, so = j.SubJobTimedOut(s, m.window, in.at)
				} else {
					sfx, so = j.RetryDue(s, in.at)
				}
				if so != job.Applied {
					return fx, o, fmt.Errorf("due sub-job %d (%s) not applied: %s", s.Index, s.State, so)
				}
				o = job.Applied
				fx.Merge(sfx)
			}
		}
	case inStartStep3:
		fx, o = j.StartStep3(in.at)
	case inStep3Done:
		fx, o = j.CompleteStep3([]byte("out"), in.at)
	}
	var pending []*job.SubJob
	for i := fx.Dispatch.From; i < fx.Dispatch.To; i++ {
		s, ok := m.subs[i]
		if !ok || s.State != job.SubJobPending {
			return fx, o, fmt.Errorf("dispatch of sub-job %d which is not pending (%v)", i, s)
		}
		pending = append(pending, s)
	}
	fx.Commands = append(fx.Commands, j.Dispatch(pending, in.at)...)
	return fx, o, nil
}

// checkState verifies the invariants that hold between any two messages.
func (m *model) checkState() error {
	j := m.j
	if j.InFlight < 0 || j.InFlight > int64(m.window) {
		return fmt.Errorf("in flight %d outside [0, %d]", j.InFlight, m.window)
	}
	counts := map[job.SubJobState]int64{}
	for _, s := range m.subs {
		counts[s.State]++
	}
	if j.Succeeded != counts[job.SubJobSucceeded] || j.Failed != counts[job.SubJobFailed] {
		return fmt.Errorf("counters succeeded=%d failed=%d, sub-jobs %v", j.Succeeded, j.Failed, counts)
	}
	if j.State.Step() >= 2 || j.Total > 0 {
		if got := counts[job.SubJobRunning] + counts[job.SubJobRetryWait]; got != j.InFlight {
			return fmt.Errorf("in flight %d, but %d sub-jobs running or waiting", j.InFlight, got)
		}
		if j.Succeeded+j.Failed+j.InFlight != j.NextIndex || j.NextIndex > j.Total {
			return fmt.Errorf("succeeded %d + failed %d + in flight %d != dispatched %d (total %d)",
				j.Succeeded, j.Failed, j.InFlight, j.NextIndex, j.Total)
		}
		if counts[job.SubJobPending] != j.Total-j.NextIndex {
			return fmt.Errorf("%d pending sub-jobs, %d never dispatched", counts[job.SubJobPending], j.Total-j.NextIndex)
		}
	}
	return nil
}

type simParams struct {
	total       int64
	window      int
	policy      job.Policy
	failPercent int // chance that an attempt reports failure
	losePercent int // chance that an attempt never reports
}

func drawParams(t *rapid.T) simParams {
	p := simParams{
		total:       rapid.Int64Range(0, 300).Draw(t, "total"),
		window:      rapid.IntRange(1, 50).Draw(t, "window"),
		failPercent: rapid.IntRange(0, 50).Draw(t, "failPercent"),
		losePercent: rapid.IntRange(0, 15).Draw(t, "losePercent"),
	}
	p.policy = job.Policy{
		SubJobTimeout:           time.Minute,
		StepTimeout:             10 * time.Minute,
		MaxAttempts:             rapid.IntRange(1, 4).Draw(t, "maxAttempts"),
		Backoff:                 job.Backoff{Initial: 0, Multiplier: 1},
		ToleratedFailures:       rapid.Int64Range(0, 10).Draw(t, "toleratedFailures"),
		ToleratedFailurePercent: rapid.SampledFrom([]float64{0, 5, 20, 50, 100}).Draw(t, "toleratedPercent"),
		SubJobsPerCommand:       rapid.IntRange(0, 5).Draw(t, "subjobsPerCommand"),
	}
	if rapid.IntRange(0, 3).Draw(t, "withBackoff") == 0 {
		// Occasionally a real backoff, so ticks must also start due retries.
		p.policy.Backoff = job.Backoff{Initial: time.Second, Max: 4 * time.Second, Multiplier: 2}
	}
	return p
}

// run is one simulated job: the model plus everything observed about it.
type run struct {
	p     simParams
	m     *model
	clock time.Time

	log    []input       // every message consumed, in order
	events []job.Message // every event emitted, in order
	// queue holds commands sent to workers and not yet run; pool holds reports not yet consumed.
	queue []job.SubJobRun
	pool  []input

	dispatched map[int64]int // attempt-1 dispatches per index
	terminal   bool
	step2Done  int
	jobFailed  int

	// snapshotAt, when ≥ 0, asks for a deep copy of the model before consuming message number snapshotAt.
	snapshotAt  int
	snapshot    *model
	initial     *model // the model right after New
	snapshotLen int    // len(events) at the snapshot
}

func newRun(t *rapid.T, p simParams) *run {
	j, fx, err := job.New("job-p", "tenant", "type", []byte("in"), p.policy, t0)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m := &model{j: j, subs: make(map[int64]*job.SubJob, p.total), total: p.total, window: p.window}
	// Step 1 stores every sub-job before it reports (AddSubJobs).
	for i := range p.total {
		m.subs[i] = &job.SubJob{JobID: j.ID, Index: i, State: job.SubJobPending}
	}
	r := &run{p: p, m: m, clock: t0, dispatched: map[int64]int{}, snapshotAt: -1, initial: m.clone()}
	r.observe(t, fx)
	return r
}

// observe checks the events of one decision and queues its commands for the workers.
func (r *run) observe(t *rapid.T, fx job.Effects) {
	last := int64(0)
	if n := len(r.events); n > 0 {
		last, _ = seqOf(r.events[n-1])
	}
	for _, e := range fx.Events {
		if r.terminal {
			t.Fatalf("event %T after a terminal event", e)
		}
		seq, ok := seqOf(e)
		if !ok {
			t.Fatalf("%T emitted as an event", e)
		}
		if seq <= last {
			t.Fatalf("seq %d of %T not above %d", seq, e, last)
		}
		last = seq
		switch e.(type) {
		case job.Step2Completed:
			r.step2Done++
		case job.JobFailed:
			r.jobFailed++
			r.terminal = true
		case job.JobCompleted, job.JobCancelled:
			r.terminal = true
		}
		r.events = append(r.events, e)
	}
	if r.step2Done > 1 || r.jobFailed > 1 {
		t.Fatalf("Step2Completed %d times, JobFailed %d times", r.step2Done, r.jobFailed)
	}
	for _, c := range fx.Commands {
		sc, ok := c.(job.RunSubJobs)
		if !ok {
			continue
		}
		if size := r.m.j.Policy.CommandSize(r.m.total); len(sc.Runs) == 0 || len(sc.Runs) > size {
			t.Fatalf("command with %d sub-jobs, want 1..%d", len(sc.Runs), size)
		}
		for _, run := range sc.Runs {
			if run.Attempt == 1 {
				r.dispatched[run.Index]++
				if r.dispatched[run.Index] > 1 {
					t.Fatalf("sub-job %d dispatched %d times", run.Index, r.dispatched[run.Index])
				}
			}
			// Each attempt of a command is run, lost or reported on its own: a worker may crash half-way.
			r.queue = append(r.queue, run)
		}
	}
}

func (r *run) consume(t *rapid.T, in input) job.Outcome {
	if len(r.log) == r.snapshotAt {
		r.snapshot = r.m.clone()
		r.snapshotLen = len(r.events)
	}
	in.at = r.clock
	r.log = append(r.log, in)
	fx, o, err := r.m.apply(in)
	if err != nil {
		t.Fatalf("%s: %v", in, err)
	}
	r.observe(t, fx)
	if err := r.m.checkState(); err != nil {
		t.Fatalf("after %s: %v", in, err)
	}
	return o
}

// deliverCopies puts 1–3 copies of a report in the pool.
func (r *run) deliverCopies(t *rapid.T, in input) {
	for range rapid.IntRange(1, 3).Draw(t, "copies") {
		r.pool = append(r.pool, in)
	}
}

// work runs one queued command: the worker reports success or failure, or never reports at all.
func (r *run) work(t *rapid.T) {
	i := rapid.IntRange(0, len(r.queue)-1).Draw(t, "command")
	c := r.queue[i]
	r.queue = slices.Delete(r.queue, i, i+1)
	roll := rapid.IntRange(0, 99).Draw(t, "roll")
	switch {
	case roll < r.p.losePercent:
		// lost: only the tick can notice
	case roll < r.p.losePercent+r.p.failPercent:
		r.deliverCopies(t, input{kind: inFailure, index: c.Index, attempt: c.Attempt})
	default:
		r.deliverCopies(t, input{kind: inSuccess, index: c.Index, attempt: c.Attempt})
	}
}

func (r *run) deliver(t *rapid.T) job.Outcome {
	i := rapid.IntRange(0, len(r.pool)-1).Draw(t, "report")
	in := r.pool[i]
	r.pool = slices.Delete(r.pool, i, i+1)
	return r.consume(t, in)
}

func (r *run) tick(t *rapid.T, jump time.Duration) {
	r.clock = r.clock.Add(jump)
	r.consume(t, input{kind: inTick})
}

// simulate runs the job to its end and checks the end state.
func (r *run) simulate(t *rapid.T) {
	r.consume(t, input{kind: inStartStep1})
	r.consume(t, input{kind: inStep1Done})
	if rapid.Bool().Draw(t, "step1Redelivered") {
		if o := r.consume(t, input{kind: inStep1Done}); o != job.Duplicate {
			t.Fatalf("second Step1Completed = %s", o)
		}
	}
	const limit = 100000
	for steps := 0; r.m.j.State == job.StateStep2Running; steps++ {
		if steps > limit {
			t.Fatalf("step 2 did not finish after %d steps: %+v", limit, r.m.j)
		}
		if len(r.queue) == 0 && len(r.pool) == 0 {
			// Nothing will ever report: only time-outs can move the job.
			r.tick(t, r.p.policy.SubJobTimeout+r.p.policy.Backoff.Max+time.Second)
			continue
		}
		switch action := rapid.IntRange(0, 19).Draw(t, "action"); {
		case action == 0:
			jump := rapid.SampledFrom([]time.Duration{0, time.Second, 30 * time.Second, r.p.policy.SubJobTimeout, 2 * r.p.policy.SubJobTimeout}).Draw(t, "jump")
			r.tick(t, jump)
		case action < 10 && len(r.queue) > 0, len(r.pool) == 0:
			r.work(t)
		default:
			r.clock = r.clock.Add(time.Millisecond)
			r.deliver(t)
		}
	}
	j := r.m.j
	allowance := r.p.policy.FailureAllowance(r.p.total)
	if r.jobFailed == 1 {
		if r.step2Done != 0 || j.State != job.StateFailed || j.Failed != allowance+1 {
			t.Fatalf("failed job: step2Done=%d state=%s failed=%d allowance=%d", r.step2Done, j.State, j.Failed, allowance)
		}
	} else {
		if r.step2Done != 1 || j.State != job.StateStep3Running {
			t.Fatalf("step 2 ended without Step2Completed once: %d, state %s", r.step2Done, j.State)
		}
		done := r.events[len(r.events)-1].(job.Step2Completed)
		if done.Succeeded != j.Succeeded || done.Failed != j.Failed || j.Succeeded+j.Failed != j.Total || j.Failed > allowance {
			t.Fatalf("Step2Completed %+v, job succeeded=%d failed=%d total=%d allowance=%d", done, j.Succeeded, j.Failed, j.Total, allowance)
		}
		if int64(len(r.dispatched)) != r.p.total || j.InFlight != 0 || j.NextIndex != j.Total {
			t.Fatalf("dispatched %d of %d, in flight %d", len(r.dispatched), r.p.total, j.InFlight)
		}
		r.consume(t, input{kind: inStartStep3})
		r.consume(t, input{kind: inStep3Done})
		if o := r.consume(t, input{kind: inStep3Done}); o != job.Duplicate {
			t.Fatalf("second Step3Completed = %s", o)
		}
		if j.State != job.StateCompleted || !r.terminal {
			t.Fatalf("state after step 3 = %s", j.State)
		}
	}
	// Whatever is still on its way is late and changes nothing but the counter.
	before := r.m.clone()
	for len(r.queue) > 0 || len(r.pool) > 0 {
		if len(r.pool) == 0 {
			r.work(t)
			continue
		}
		if o := r.deliver(t); o != job.Late {
			t.Fatalf("report after step 2 = %s", o)
		}
	}
	r.tick(t, time.Hour)
	after := *r.m.j
	after.Late = before.j.Late
	if fmt.Sprint(after) != fmt.Sprint(*before.j) {
		t.Fatalf("late reports changed the job:\n%+v\n%+v", after, *before.j)
	}
	if err := sameSubJobs(before, r.m); err != nil {
		t.Fatalf("late reports changed sub-jobs: %v", err)
	}
}

func sameSubJobs(a, b *model) error {
	if len(a.subs) != len(b.subs) {
		return fmt.Errorf("%d sub-jobs vs %d", len(a.subs), len(b.subs))
	}
	for i, s := range a.subs {
		o := b.subs[i]
		if s.State != o.State || s.Attempt != o.Attempt || !s.Deadline.Equal(o.Deadline) || !s.NextAttemptAt.Equal(o.NextAttemptAt) ||
			!s.FinishedAt.Equal(o.FinishedAt) || !bytes.Equal(s.Result, o.Result) {
			return fmt.Errorf("sub-job %d: %+v vs %+v", i, s, o)
		}
	}
	return nil
}

func TestPropertyWholeJob(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := newRun(t, drawParams(t))
		r.simulate(t)
	})
}

// A manager that crashes restarts from the last committed state (a snapshot) and is fed again every message
// it consumed after it, some of them twice: it must reach exactly the same state and emit the same events.
// Messages consumed before the snapshot may be redelivered too; they change nothing but counters.
func TestPropertyCrashReplay(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := drawParams(t)
		r := newRun(t, p)
		r.snapshotAt = rapid.IntRange(0, 600).Draw(t, "snapshotAt")
		r.simulate(t)
		m, from, fromEvents := r.snapshot, r.snapshotAt, r.snapshotLen
		if m == nil { // the run was shorter than the crash point: crash right after the job was created
			m, from, fromEvents = r.initial, 0, 1
		}
		var replayed []job.Message

		// Old messages, already committed before the snapshot, redelivered in order.
		for _, in := range r.log[:from] {
			if in.kind != inSuccess && in.kind != inFailure && in.kind != inTick {
				continue
			}
			if !rapid.Bool().Draw(t, "redeliverOld") {
				continue
			}
			fx, o, err := m.apply(in)
			if err != nil {
				t.Fatalf("redelivered %s: %v", in, err)
			}
			if o == job.Applied || len(fx.Events) > 0 || len(fx.Commands) > 0 {
				t.Fatalf("redelivered %s was applied again: %s %+v", in, o, fx)
			}
		}
		for _, in := range r.log[from:] {
			for n := range 1 + rapid.IntRange(0, 1).Draw(t, "again") {
				fx, o, err := m.apply(in)
				if err != nil {
					t.Fatalf("replay of %s: %v", in, err)
				}
				if n > 0 && (o == job.Applied || len(fx.Events)+len(fx.Commands) > 0) {
					t.Fatalf("second replay of %s did something: %s %+v", in, o, fx)
				}
				replayed = append(replayed, fx.Events...)
				if err := m.checkState(); err != nil {
					t.Fatalf("replay of %s: %v", in, err)
				}
			}
		}
		want := r.events[fromEvents:]
		if fmt.Sprint(withoutDeliveryCounts(replayed)) != fmt.Sprint(withoutDeliveryCounts(want)) {
			t.Fatalf("replay emitted\n%v\nwant\n%v", replayed, want)
		}
		a, b := *m.j, *r.m.j
		a.Duplicates, a.Late = b.Duplicates, b.Late
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("replayed job\n%+v\nwant\n%+v", a, b)
		}
		// Extra deliveries only ever add to the counters.
		if m.j.Duplicates < r.m.j.Duplicates || m.j.Late < r.m.j.Late {
			t.Fatalf("replay counted duplicates %d late %d, fewer than the run's %d and %d",
				m.j.Duplicates, m.j.Late, r.m.j.Duplicates, r.m.j.Late)
		}
		if err := sameSubJobs(m, r.m); err != nil {
			t.Fatal(err)
		}
	})
}

// withoutDeliveryCounts clears the counters of deliveries (duplicates, late reports) in the events that
// end a job: a replay sees other deliveries than the original run, everything else must be identical.
func withoutDeliveryCounts(events []job.Message) []job.Message {
	out := make([]job.Message, len(events))
	for i, e := range events {
		switch ev := e.(type) {
		case job.JobCompleted:
			ev.Counts.Duplicates, ev.Counts.Late = 0, 0
			e = ev
		case job.JobFailed:
			ev.Counts.Duplicates, ev.Counts.Late = 0, 0
			e = ev
		case job.JobCancelled:
			ev.Counts.Duplicates, ev.Counts.Late = 0, 0
			e = ev
		}
		out[i] = e
	}
	return out
}
