// Package statstest produces realistic event streams of jobs for the statistics tests: the manager's
// events come from the real job aggregate, the workers' reports from a scripted pool, so the final Counts
// are the ones the manager would publish.
package statstest

import (
	"fmt"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Event is one message of the event log: its id and its payload.
type Event struct {
	ID      string
	Message job.Message
}

// Run scripts one job. The Every fields pick sub-jobs by index (every k-th, starting at index 0; 0 picks
// none).
type Run struct {
	JobID, Tenant, Type string
	Start               time.Time
	SubJobs             int
	// FailFirstEvery: the first attempt fails (with one of a few error texts), the second succeeds.
	FailFirstEvery int
	// FailEvery: every attempt fails; the policy tolerates it, so the job still completes.
	FailEvery int
	// TimeOutEvery: the first attempt times out; the next ones run, and unless the sub-job fails for good
	// the first reports success after step 2 ended (late).
	TimeOutEvery int
	// DuplicateEvery: the successful attempt is reported twice, under two ids, with different durations.
	DuplicateEvery int
	// Step1Retry: step 1's first attempt fails.
	Step1Retry bool
	// CancelAfter > 0 cancels the job after that many sub-job reports; two more reports arrive after.
	CancelAfter int
}

// Policy is the policy of every scripted job: three attempts, retries at once, failures tolerated.
func Policy() job.Policy {
	return job.Policy{
		SubJobTimeout: time.Minute, StepTimeout: time.Hour, MaxAttempts: 3,
		Backoff: job.Backoff{Multiplier: 1}, ToleratedFailurePercent: 100,
	}
}

// Errors are the texts failing attempts report, picked by index.
var Errors = []string{"connection reset by peer", "upstream returned 503", "invalid record:\n  missing field \"amount\""}

// SubJobDuration is how long an attempt of a sub-job runs.
func SubJobDuration(index int64, attempt int) time.Duration {
	return time.Duration(1+(index*7919+int64(attempt)*104729)%997)*time.Millisecond + 250*time.Microsecond
}

type script struct {
	r      Run
	j      *job.Job
	now    time.Time
	events []Event
	subs   map[int64]*job.SubJob
	queue  []job.SubJobRun
	late   []job.Step2SubjobCompleted
	// reports counts sub-job reports, for CancelAfter.
	reports int
}

const window = 64

// Events returns the job's events in log order.
func (r Run) Events() []Event {
	j, fx, err := job.New(r.JobID, r.Tenant, r.Type, nil, Policy(), r.Start)
	if err != nil {
		panic(err)
	}
	s := &script{r: r, j: j, now: r.Start, subs: map[int64]*job.SubJob{}}
	s.manager(fx, job.Applied)
	s.tick()
	_, _ = j.StartStep1(s.now)
	if r.Step1Retry {
		s.tick()
		s.report(job.StepFailed{JobID: r.JobID, Step: 1, Attempt: j.StepAttempt, Error: "step 1: source unavailable", At: s.now})
		s.manager(j.StepAttemptFailed(1, j.StepAttempt, "step 1: source unavailable", s.now))
	}
	s.tick()
	s.report(job.Step1Completed{JobID: r.JobID, Attempt: j.StepAttempt, Total: int64(r.SubJobs), At: s.now})
	s.manager(j.CompleteStep1(int64(r.SubJobs), window, s.now))
	afterEnd := 0
	for len(s.queue) > 0 && afterEnd < 2 {
		if j.State.Terminal() {
			afterEnd++
		}
		c := s.queue[0]
		s.queue = s.queue[1:]
		s.run(c)
	}
	for _, l := range s.late {
		s.tick()
		l.At = s.now
		s.report(l)
		s.manager(j.SubJobSucceeded(s.subs[l.Index], nil, window, s.now, s.now))
	}
	if j.State == job.StateStep3Running {
		_, _ = j.StartStep3(s.now)
		s.tick()
		s.report(job.Step3Completed{JobID: r.JobID, Attempt: j.StepAttempt, At: s.now})
		s.manager(j.CompleteStep3(nil, s.now))
	}
	return s.events
}

// tick moves the clock on.
func (s *script) tick() { s.now = s.now.Add(7 * time.Millisecond) }

func (s *script) emit(m job.Message) {
	s.events = append(s.events, Event{ID: fmt.Sprintf("%s/%d", s.r.JobID, len(s.events)), Message: m})
}

// report is a worker's report.
func (s *script) report(m job.Message) { s.emit(m) }

// manager publishes what a reaction emitted and dispatches what it asks for.
func (s *script) manager(fx job.Effects, _ job.Outcome) {
	for _, e := range fx.Events {
		s.emit(e)
	}
	for _, c := range fx.Commands {
		s.enqueue(c)
	}
	var subs []*job.SubJob
	for i := fx.Dispatch.From; i < fx.Dispatch.To; i++ {
		sj := &job.SubJob{JobID: s.r.JobID, Index: i, State: job.SubJobPending}
		s.subs[i] = sj
		subs = append(subs, sj)
	}
	for _, c := range s.j.Dispatch(subs, s.now) {
		s.enqueue(c)
	}
}

// enqueue queues a command's sub-job attempts; workers run them one by one.
func (s *script) enqueue(c job.Message) {
	if c, ok := c.(job.RunSubJobs); ok {
		s.queue = append(s.queue, c.Runs...)
	}
}

func every(k int, i int64) bool { return k > 0 && i%int64(k) == 0 }

// run is a worker running one attempt, and the manager's reaction to its report.
func (s *script) run(c job.SubJobRun) {
	r, j, sj := s.r, s.j, s.subs[c.Index]
	if r.CancelAfter > 0 && s.reports == r.CancelAfter && !j.State.Terminal() {
		fx, err := j.Cancel("cancelled by the test", s.now)
		if err != nil {
			panic(err)
		}
		s.manager(fx, job.Applied)
	}
	s.reports++
	s.tick()
	d := SubJobDuration(c.Index, c.Attempt)
	switch {
	case every(r.TimeOutEvery, c.Index) && c.Attempt == 1:
		if sj.Deadline.After(s.now) {
			s.now = sj.Deadline
		}
		s.manager(j.SubJobTimedOut(sj, window, s.now))
		if !every(r.FailEvery, c.Index) {
			s.late = append(s.late, job.Step2SubjobCompleted{JobID: r.JobID, Index: c.Index, Attempt: 1, Duration: time.Minute + d})
		}
	case every(r.FailEvery, c.Index), every(r.FailFirstEvery, c.Index) && c.Attempt == 1:
		reason := Errors[int(c.Index)%len(Errors)]
		s.report(job.Step2SubjobFailed{JobID: r.JobID, Index: c.Index, Attempt: c.Attempt, Error: reason, At: s.now, Duration: d})
		s.manager(j.SubJobFailed(sj, c.Attempt, reason, window, s.now, s.now))
	default:
		s.report(job.Step2SubjobCompleted{JobID: r.JobID, Index: c.Index, Attempt: c.Attempt, At: s.now, Duration: d})
		if every(r.DuplicateEvery, c.Index) {
			s.report(job.Step2SubjobCompleted{JobID: r.JobID, Index: c.Index, Attempt: c.Attempt, At: s.now.Add(time.Millisecond), Duration: d + 3*time.Millisecond})
		}
		s.manager(j.SubJobSucceeded(sj, nil, window, s.now, s.now))
		if every(r.DuplicateEvery, c.Index) {
			s.manager(j.SubJobSucceeded(sj, nil, window, s.now, s.now))
		}
	}
}

// Counts returns the manager's final counters of the job the events end (from its terminal event).
func Counts(events []Event) (job.Counts, bool) {
	for _, e := range events {
		switch m := e.Message.(type) {
		case job.JobCompleted:
			return m.Counts, true
		case job.JobFailed:
			return m.Counts, true
		case job.JobCancelled:
			return m.Counts, true
		}
	}
	return job.Counts{}, false
}
