package job

import (
	"errors"
	"fmt"
	"time"
)

var (
	// ErrNotFound: no job (or sub-job) with that id.
	ErrNotFound = errors.New("not found")
	// ErrTerminal: the job already completed, failed or was cancelled.
	ErrTerminal = errors.New("job already finished")
	// ErrNotRetryable: failed sub-jobs can be retried only while step 2 runs.
	ErrNotRetryable = errors.New("failed sub-jobs can be retried only while step 2 runs")
)

// Outcome says what applying a worker's report did. Callers count Duplicate and Late; neither changes state
// beyond the counter, so a message delivered many times has the effect of one delivery.
type Outcome int

const (
	// Applied: the report moved the job forward.
	Applied Outcome = iota
	// Duplicate: the same report (or one for an attempt that is no longer current) was applied before.
	Duplicate
	// Late: the report arrived after the step it belongs to closed (or after the job ended).
	Late
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Late:
		return "late"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Job is the aggregate: one run of a job type. Its counters make fan-in O(1): a sub-job's own state
// transition guards each increment, so a completion counts once however often it is delivered.
type Job struct {
	ID     string
	Tenant string
	Type   string
	Input  []byte
	State  State
	Policy Policy

	// Seq numbers the events this job emitted.
	Seq int64
	// Total is the number of sub-jobs, known once step 1 completed.
	Total int64
	// NextIndex is the lowest sub-job index never dispatched: dispatch streams through 0..Total-1 in windows.
	NextIndex int64
	// InFlight counts sub-jobs dispatched and not yet finished (running or waiting for a retry).
	InFlight  int64
	Succeeded int64
	Failed    int64
	// Retries counts attempts started after a failure or time-out, over all sub-jobs.
	Retries    int64
	TimedOut   int64
	Duplicates int64
	Late       int64

	// StepAttempt and StepDeadline belong to the running step 1 or step 3 (zero while step 3 is not dispatched).
	StepAttempt  int
	StepDeadline time.Time

	Output []byte // step 3's output
	Error  string
	// Deadline is when the submitter needs the job finished (zero: none). It is informational for now:
	// it is shown to users and kept for planning the worker pool.
	Deadline  time.Time
	CreatedAt time.Time
	UpdatedAt time.Time
	Steps     [3]StepTimes
	EndedAt   time.Time
}

// StepTimes are when a step started and finished (zero when it has not).
type StepTimes struct {
	StartedAt  time.Time
	FinishedAt time.Time
}

// Effects is what a decision asks the application to do, in the same transaction as the state change.
type Effects struct {
	Events   []Message // for the event log
	Commands []Message // for the work queue
	// Dispatch is a range of never-dispatched sub-job indexes [From, To) to mark running and send.
	Dispatch Range
}

// Range is a half-open interval of sub-job indexes.
type Range struct{ From, To int64 }

// Len is the number of indexes in r.
func (r Range) Len() int64 { return max(0, r.To-r.From) }

// Merge appends o's effects to e.
func (e *Effects) Merge(o Effects) {
	e.Events = append(e.Events, o.Events...)
	e.Commands = append(e.Commands, o.Commands...)
	switch {
	case o.Dispatch.Len() == 0:
	case e.Dispatch.Len() == 0:
		e.Dispatch = o.Dispatch
	case e.Dispatch.To == o.Dispatch.From:
		// advanceStep2 hands out consecutive ranges, so two refills in one transaction join up.
		e.Dispatch.To = o.Dispatch.To
	default:
		panic(fmt.Sprintf("job: dispatch ranges %v and %v are not consecutive", e.Dispatch, o.Dispatch))
	}
}

// New creates a job in PENDING and the JobStarted event that sets it going.
func New(id, tenant, jobType string, input []byte, policy Policy, now time.Time) (*Job, Effects, error) {
	if id == "" || jobType == "" {
		return nil, Effects{}, errors.New("job needs an id and a type")
	}
	policy = policy.WithDefaults()
	if err := policy.Validate(); err != nil {
		return nil, Effects{}, fmt.Errorf("policy of job type %s: %w", jobType, err)
	}
	j := &Job{ID: id, Tenant: tenant, Type: jobType, Input: input, State: StatePending, Policy: policy, CreatedAt: now, UpdatedAt: now}
	var fx Effects
	j.emit(&fx, &JobStarted{JobID: id, Tenant: tenant, Type: jobType, At: now})
	return j, fx, nil
}

// emit assigns the next sequence number to a manager event and queues it.
func (j *Job) emit(fx *Effects, e Message) {
	j.Seq++
	switch ev := e.(type) {
	case *JobStarted:
		ev.Seq = j.Seq
	case *Step2Started:
		ev.Seq = j.Seq
	case *Step2Completed:
		ev.Seq = j.Seq
	case *JobCompleted:
		ev.Seq = j.Seq
	case *JobFailed:
		ev.Seq = j.Seq
	case *JobCancelled:
		ev.Seq = j.Seq
	case *AttemptTimedOut:
		ev.Seq = j.Seq
	default:
		panic(fmt.Sprintf("job: %T is not a manager event", e))
	}
	fx.Events = append(fx.Events, derefEvent(e))
}

// derefEvent stores events by value so that marshalers see the plain struct name.
func derefEvent(e Message) Message {
	switch ev := e.(type) {
	case *JobStarted:
		return *ev
	case *Step2Started:
		return *ev
	case *Step2Completed:
		return *ev
	case *JobCompleted:
		return *ev
	case *JobFailed:
		return *ev
	case *JobCancelled:
		return *ev
	case *AttemptTimedOut:
		return *ev
	}
	return e
}

// Version increases with every change a user can see: each event the job emits and each sub-job
// outcome, retry or time-out it counts. Live views number their updates with it, so a client that
// reconnects asks for what came after the last version it saw.
func (j *Job) Version() int64 {
	return j.Seq + j.Succeeded + j.Failed + j.Retries + j.TimedOut + int64(j.State.rank())
}

func (j *Job) counts() Counts {
	return Counts{Total: j.Total, Succeeded: j.Succeeded, Failed: j.Failed, Retries: j.Retries,
		TimedOut: j.TimedOut, Duplicates: j.Duplicates, Late: j.Late}
}

// Progress is the share of sub-jobs with a final outcome, 0..1 (1 once the job completed).
func (j *Job) Progress() float64 {
	if j.State == StateCompleted {
		return 1
	}
	if j.Total == 0 {
		return 0
	}
	return float64(j.Succeeded+j.Failed) / float64(j.Total)
}

// StartStep1 reacts to JobStarted: step 1 goes to a worker.
func (j *Job) StartStep1(now time.Time) (Effects, Outcome) {
	if j.State != StatePending {
		return Effects{}, Duplicate
	}
	j.State = StateStep1Running
	j.Steps[0].StartedAt = now
	return Effects{Commands: []Message{j.runStep(1, now)}}, Applied
}

func (j *Job) runStep(step int, now time.Time) Message {
	j.StepAttempt++
	j.StepDeadline = now.Add(j.Policy.StepTimeout)
	j.UpdatedAt = now
	if step == 1 {
		return RunStep1{JobID: j.ID, Tenant: j.Tenant, Type: j.Type, Attempt: j.StepAttempt, Input: j.Input}
	}
	return RunStep3{JobID: j.ID, Tenant: j.Tenant, Type: j.Type, Attempt: j.StepAttempt}
}

// CompleteStep1 reacts to Step1Completed: step 2 starts and the first window of sub-jobs is dispatched.
func (j *Job) CompleteStep1(total int64, window int, now time.Time) (Effects, Outcome) {
	switch {
	case j.State.Terminal():
		return Effects{}, Late
	case j.State != StateStep1Running:
		return Effects{}, Duplicate
	}
	if total < 0 {
		return j.fail(fmt.Sprintf("step 1 reported %d sub-jobs", total), now), Applied
	}
	j.Steps[0].FinishedAt = now
	j.Steps[1].StartedAt = now
	j.State = StateStep2Running
	j.Total = total
	j.StepAttempt, j.StepDeadline = 0, time.Time{}
	j.UpdatedAt = now
	var fx Effects
	j.emit(&fx, &Step2Started{JobID: j.ID, Total: total, At: now})
	fx.Merge(j.advanceStep2(window, now, now))
	return fx, Applied
}

// advanceStep2 refills the dispatch window and closes step 2 once every sub-job has a final outcome.
func (j *Job) advanceStep2(window int, outcomeAt, now time.Time) Effects {
	var fx Effects
	if j.State != StateStep2Running {
		return fx
	}
	if j.Succeeded+j.Failed == j.Total {
		j.Steps[1].FinishedAt = now
		j.Steps[2].StartedAt = now
		j.State = StateStep3Running
		j.emit(&fx, &Step2Completed{JobID: j.ID, Succeeded: j.Succeeded, Failed: j.Failed, At: now, LastOutcomeAt: outcomeAt})
		return fx
	}
	free := int64(window) - j.InFlight
	remaining := j.Total - j.NextIndex
	// Refill in batches of at least a quarter window (or whatever is left) so that dispatch costs one
	// range operation per many completions, not one per completion.
	if remaining == 0 || free <= 0 || (free < int64(max(window/4, 1)) && free < remaining) {
		return fx
	}
	n := min(free, remaining)
	fx.Dispatch = Range{From: j.NextIndex, To: j.NextIndex + n}
	j.NextIndex += n
	j.InFlight += n
	return fx
}

// SubJobSucceeded applies one report of success. Success from any attempt of an unfinished sub-job
// counts (a timed-out attempt may still finish); every later report is a duplicate.
func (j *Job) SubJobSucceeded(s *SubJob, result []byte, window int, outcomeAt, now time.Time) (Effects, Outcome) {
	if o := j.acceptsOutcome(s); o != Applied {
		return Effects{}, o
	}
	s.State = SubJobSucceeded
	s.Result = result
	s.FinishedAt = now
	s.LastError = ""
	j.InFlight--
	j.Succeeded++
	j.UpdatedAt = now
	return j.advanceStep2(window, outcomeAt, now), Applied
}

// SubJobFailed applies one report of a failed attempt: the sub-job is retried with backoff or, when its
// attempts are used up, failed for good. Only the current attempt's failure counts.
func (j *Job) SubJobFailed(s *SubJob, attempt int, reason string, window int, outcomeAt, now time.Time) (Effects, Outcome) {
	if o := j.acceptsOutcome(s); o != Applied {
		return Effects{}, o
	}
	if s.State != SubJobRunning || s.Attempt != attempt {
		j.Duplicates++ // a report for an attempt that is no longer current
		return Effects{}, Duplicate
	}
	return j.failAttempt(s, reason, window, outcomeAt, now), Applied
}

// SubJobTimedOut is the tick's verdict on an attempt that never reported back before its deadline.
func (j *Job) SubJobTimedOut(s *SubJob, window int, now time.Time) (Effects, Outcome) {
	if o := j.acceptsOutcome(s); o != Applied {
		return Effects{}, o
	}
	if s.State != SubJobRunning || now.Before(s.Deadline) {
		return Effects{}, Duplicate
	}
	j.TimedOut++
	var fx Effects
	j.emit(&fx, &AttemptTimedOut{JobID: j.ID, Step: 2, Index: s.Index, Attempt: s.Attempt, At: now})
	reason := fmt.Sprintf("attempt %d timed out after %s", s.Attempt, j.Policy.SubJobTimeout)
	fx.Merge(j.failAttempt(s, reason, window, now, now))
	return fx, Applied
}

func (j *Job) acceptsOutcome(s *SubJob) Outcome {
	if j.State != StateStep2Running {
		j.Late++
		return Late
	}
	if s.State != SubJobRunning && s.State != SubJobRetryWait {
		j.Duplicates++
		return Duplicate
	}
	return Applied
}

func (j *Job) failAttempt(s *SubJob, reason string, window int, outcomeAt, now time.Time) Effects {
	s.LastError = reason
	j.UpdatedAt = now
	if s.Attempt < j.Policy.MaxAttempts {
		s.State = SubJobRetryWait
		s.NextAttemptAt = now.Add(j.Policy.Backoff.Delay(s.Attempt + 1))
		s.Deadline = time.Time{}
		if !s.NextAttemptAt.After(now) {
			return Effects{Commands: []Message{j.retry(s, now)}}
		}
		return Effects{}
	}
	s.State = SubJobFailed
	s.FinishedAt = now
	j.InFlight--
	j.Failed++
	if j.Failed > j.Policy.FailureAllowance(j.Total) {
		return j.fail(fmt.Sprintf("%d sub-jobs failed, more than the %d tolerated; last: sub-job %d: %s",
			j.Failed, j.Policy.FailureAllowance(j.Total), s.Index, reason), now)
	}
	return j.advanceStep2(window, outcomeAt, now)
}

// RetryDue starts the next attempt of a sub-job whose backoff has elapsed.
func (j *Job) RetryDue(s *SubJob, now time.Time) (Effects, Outcome) {
	if j.State != StateStep2Running {
		return Effects{}, Late
	}
	if s.State != SubJobRetryWait || now.Before(s.NextAttemptAt) {
		return Effects{}, Duplicate
	}
	return Effects{Commands: []Message{j.retry(s, now)}}, Applied
}

func (j *Job) retry(s *SubJob, now time.Time) Message {
	j.Retries++
	s.Attempt++
	s.State = SubJobRunning
	s.Deadline = now.Add(j.Policy.SubJobTimeout)
	s.NextAttemptAt = time.Time{}
	return RunSubJobs{JobID: j.ID, Tenant: j.Tenant, Type: j.Type, Runs: []SubJobRun{{Index: s.Index, Attempt: s.Attempt, Input: s.Input}}}
}

// RetryFailedSubJob gives a sub-job that failed for good one more attempt (attempt numbers keep counting
// up, so reports of the old attempts stay duplicates). It is allowed while step 2 runs: once step 2
// closed, step 3 has already been given the outcome.
func (j *Job) RetryFailedSubJob(s *SubJob, now time.Time) (Message, error) {
	if j.State != StateStep2Running {
		return nil, fmt.Errorf("retry sub-job %d of job %s: %w (state %s)", s.Index, j.ID, ErrNotRetryable, j.State)
	}
	if s.State != SubJobFailed {
		return nil, fmt.Errorf("retry sub-job %d of job %s: %w (sub-job %s)", s.Index, j.ID, ErrNotRetryable, s.State)
	}
	j.Failed--
	j.InFlight++
	j.UpdatedAt = now
	s.FinishedAt = time.Time{}
	return j.retry(s, now), nil
}

// StartStep3 reacts to Step2Completed: step 3 goes to a worker, once.
func (j *Job) StartStep3(now time.Time) (Effects, Outcome) {
	switch {
	case j.State.Terminal():
		return Effects{}, Late
	case j.State != StateStep3Running || j.StepAttempt != 0:
		return Effects{}, Duplicate
	}
	return Effects{Commands: []Message{j.runStep(3, now)}}, Applied
}

// CompleteStep3 reacts to Step3Completed: the job is done.
func (j *Job) CompleteStep3(output []byte, now time.Time) (Effects, Outcome) {
	switch {
	case j.State.Terminal():
		if j.State == StateCompleted {
			return Effects{}, Duplicate
		}
		return Effects{}, Late
	case j.State != StateStep3Running || j.StepAttempt == 0:
		return Effects{}, Duplicate
	}
	j.Steps[2].FinishedAt = now
	j.State = StateCompleted
	j.Output = output
	j.EndedAt = now
	j.UpdatedAt = now
	j.StepAttempt, j.StepDeadline = 0, time.Time{}
	var fx Effects
	j.emit(&fx, &JobCompleted{JobID: j.ID, At: now, Counts: j.counts()})
	return fx, Applied
}

// StepAttemptFailed reacts to a failed (or, from the tick, timed-out) attempt of step 1 or 3.
func (j *Job) StepAttemptFailed(step, attempt int, reason string, now time.Time) (Effects, Outcome) {
	switch {
	case j.State.Terminal():
		return Effects{}, Late
	case j.State.Step() != step || j.StepAttempt != attempt:
		return Effects{}, Duplicate
	}
	if j.StepAttempt < j.Policy.MaxAttempts {
		j.Retries++
		return Effects{Commands: []Message{j.runStep(step, now)}}, Applied
	}
	return j.fail(fmt.Sprintf("step %d failed after %d attempts: %s", step, j.StepAttempt, reason), now), Applied
}

// Tick times out the running step 1 or 3 attempt when its deadline passed. Sub-job time-outs and due
// retries are found by the store and applied one by one with SubJobTimedOut and RetryDue.
func (j *Job) Tick(now time.Time) (Effects, Outcome) {
	step := j.State.Step()
	if (step != 1 && step != 3) || j.StepAttempt == 0 || now.Before(j.StepDeadline) {
		return Effects{}, Duplicate
	}
	j.TimedOut++
	var fx Effects
	j.emit(&fx, &AttemptTimedOut{JobID: j.ID, Step: step, Attempt: j.StepAttempt, At: now})
	more, outcome := j.StepAttemptFailed(step, j.StepAttempt,
		fmt.Sprintf("attempt %d timed out after %s", j.StepAttempt, j.Policy.StepTimeout), now)
	fx.Merge(more)
	return fx, outcome
}

// Abort fails a running job because its stored state cannot be continued (for instance sub-jobs missing
// from the store). Failing it loudly beats redelivering the same event forever.
func (j *Job) Abort(reason string, now time.Time) Effects {
	if j.State.Terminal() {
		return Effects{}
	}
	return j.fail(reason, now)
}

// Cancel stops the job: nothing more is dispatched and every later report is late.
func (j *Job) Cancel(reason string, now time.Time) (Effects, error) {
	if j.State.Terminal() {
		return Effects{}, fmt.Errorf("cancel job %s: %w (state %s)", j.ID, ErrTerminal, j.State)
	}
	j.State = StateCancelled
	j.Error = reason
	j.EndedAt = now
	j.UpdatedAt = now
	var fx Effects
	j.emit(&fx, &JobCancelled{JobID: j.ID, Reason: reason, At: now, Counts: j.counts()})
	return fx, nil
}

func (j *Job) fail(reason string, now time.Time) Effects {
	j.State = StateFailed
	j.Error = reason
	j.EndedAt = now
	j.UpdatedAt = now
	var fx Effects
	j.emit(&fx, &JobFailed{JobID: j.ID, Reason: reason, At: now, Counts: j.counts()})
	return fx
}

// SubJob is one independent unit of step 2.
type SubJob struct {
	JobID         string
	Index         int64
	State         SubJobState
	Attempt       int
	Input         []byte
	Result        []byte
	LastError     string
	Deadline      time.Time // of the running attempt
	NextAttemptAt time.Time // when RETRY_WAIT ends
	StartedAt     time.Time // first dispatch
	FinishedAt    time.Time
}

// Dispatch starts the first attempt of pending sub-jobs and returns the commands for them, each carrying
// up to Policy.CommandSize sub-jobs and MaxCommandInputBytes of inputs. A worker runs a command's sub-jobs
// one after another, so each attempt's deadline allows for the whole command; the worker still cuts
// every attempt at SubJobTimeout.
func (j *Job) Dispatch(subs []*SubJob, now time.Time) []Message {
	size := j.Policy.CommandSize(j.Total)
	var cmds []Message
	for len(subs) > 0 {
		n, bytes := 0, 0
		for n < min(size, len(subs)) && (n == 0 || bytes+len(subs[n].Input) <= MaxCommandInputBytes) {
			bytes += len(subs[n].Input)
			n++
		}
		chunk := subs[:n]
		subs = subs[n:]
		deadline := now.Add(time.Duration(len(chunk)) * j.Policy.SubJobTimeout)
		runs := make([]SubJobRun, len(chunk))
		for i, s := range chunk {
			s.State = SubJobRunning
			s.Attempt = 1
			s.StartedAt = now
			s.Deadline = deadline
			runs[i] = SubJobRun{Index: s.Index, Attempt: 1, Input: s.Input}
		}
		cmds = append(cmds, RunSubJobs{JobID: j.ID, Tenant: j.Tenant, Type: j.Type, Runs: runs})
	}
	return cmds
}
