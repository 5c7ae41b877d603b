package job

import "time"

// Message is anything that travels on the event log or the work queue. JobKey is its partition key: every
// message of one job goes to the same partition, so one manager sees a job's events in order where the
// transport keeps order.
type Message interface {
	JobKey() string
}

// Events the manager emits. Seq is the job's own monotonic sequence number, assigned by the aggregate.

// JobStarted: a job was submitted; step 1 is to run.
type JobStarted struct {
	JobID  string    `json:"job_id"`
	Tenant string    `json:"tenant"`
	Type   string    `json:"type"`
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
}

// Step2Started: step 1's output was split into Total sub-jobs and dispatch began.
type Step2Started struct {
	JobID string    `json:"job_id"`
	Total int64     `json:"total"`
	Seq   int64     `json:"seq"`
	At    time.Time `json:"at"`
}

// Step2Completed: every sub-job has a final outcome. Emitted exactly once per job.
type Step2Completed struct {
	JobID     string    `json:"job_id"`
	Succeeded int64     `json:"succeeded"`
	Failed    int64     `json:"failed"`
	Seq       int64     `json:"seq"`
	At        time.Time `json:"at"`
	// LastOutcomeAt is when the outcome that closed step 2 was consumed; At minus it is the fan-in latency.
	LastOutcomeAt time.Time `json:"last_outcome_at"`
}

// JobCompleted: step 3 finished; the job is done.
type JobCompleted struct {
	JobID  string    `json:"job_id"`
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Counts Counts    `json:"counts"`
}

// JobFailed: the job stopped for good.
type JobFailed struct {
	JobID  string    `json:"job_id"`
	Reason string    `json:"reason"`
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Counts Counts    `json:"counts"`
}

// JobCancelled: a user cancelled the job.
type JobCancelled struct {
	JobID  string    `json:"job_id"`
	Reason string    `json:"reason"`
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Counts Counts    `json:"counts"`
}

// Counts are the manager's final counters of a job, carried by the event that ends it, so that
// consumers of the log (statistics) end with the manager's exact figures whatever they saw on the way.
type Counts struct {
	Total      int64 `json:"total"`
	Succeeded  int64 `json:"succeeded"`
	Failed     int64 `json:"failed"`
	Retries    int64 `json:"retries"`
	TimedOut   int64 `json:"timed_out"`
	Duplicates int64 `json:"duplicates"`
	Late       int64 `json:"late"`
}

// AttemptTimedOut: the tick found an attempt past its deadline with no report. Step is 1, 2 or 3;
// Index is the sub-job's for step 2 (0 otherwise). The manager emits it for other consumers
// (statistics, timelines); it reacts to nothing itself.
type AttemptTimedOut struct {
	JobID   string    `json:"job_id"`
	Step    int       `json:"step"`
	Index   int64     `json:"index"`
	Attempt int       `json:"attempt"`
	Seq     int64     `json:"seq"`
	At      time.Time `json:"at"`
}

// Events workers emit after running a unit of work. Sub-job outcomes travel in Step2SubjobsReported.

// Step1Completed: step 1 ran and its output was split into Total sub-jobs, all stored.
type Step1Completed struct {
	JobID   string    `json:"job_id"`
	Attempt int       `json:"attempt"`
	Total   int64     `json:"total"`
	At      time.Time `json:"at"`
}

// Step2SubjobCompleted: one attempt of one sub-job succeeded. May arrive more than once.
type Step2SubjobCompleted struct {
	JobID   string    `json:"job_id"`
	Index   int64     `json:"index"`
	Attempt int       `json:"attempt"`
	Result  []byte    `json:"result,omitempty"`
	At      time.Time `json:"at"`
	// Duration is how long the attempt ran on the worker.
	Duration time.Duration `json:"duration,omitempty"`
}

// Step2SubjobFailed: one attempt of one sub-job failed. May arrive more than once.
type Step2SubjobFailed struct {
	JobID    string        `json:"job_id"`
	Index    int64         `json:"index"`
	Attempt  int           `json:"attempt"`
	Error    string        `json:"error"`
	At       time.Time     `json:"at"`
	Duration time.Duration `json:"duration,omitempty"`
}

// Step2SubjobsReported carries the outcomes of the sub-job attempts of one job that a worker finished close
// together: one message on the log for many reports. It may arrive more than once, and a report in it may
// repeat one already applied; each report is judged on its own, exactly as if it had come alone.
type Step2SubjobsReported struct {
	JobID     string                 `json:"job_id"`
	Completed []Step2SubjobCompleted `json:"completed,omitempty"`
	Failed    []Step2SubjobFailed    `json:"failed,omitempty"`
}

// Len is how many reports e carries.
func (e Step2SubjobsReported) Len() int { return len(e.Completed) + len(e.Failed) }

// Reports lists e's reports, successes first, each as the event it stands for.
func (e Step2SubjobsReported) Reports() []Message {
	out := make([]Message, 0, e.Len())
	for _, c := range e.Completed {
		out = append(out, c)
	}
	for _, f := range e.Failed {
		out = append(out, f)
	}
	return out
}

// Step3Completed: step 3 ran.
type Step3Completed struct {
	JobID   string    `json:"job_id"`
	Attempt int       `json:"attempt"`
	Output  []byte    `json:"output,omitempty"`
	At      time.Time `json:"at"`
}

// StepFailed: one attempt of step 1 or step 3 failed.
type StepFailed struct {
	JobID   string    `json:"job_id"`
	Step    int       `json:"step"`
	Attempt int       `json:"attempt"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// Tick is the periodic clock event for one running job: it times out attempts that never reported back and
// starts retries that are due.
type Tick struct {
	JobID string    `json:"job_id"`
	At    time.Time `json:"at"`
}

// Commands for workers, sent on the work queue.

// RunStep1 asks a worker to run step 1 of a job and split its output.
type RunStep1 struct {
	JobID   string `json:"job_id"`
	Tenant  string `json:"tenant"`
	Type    string `json:"type"`
	Attempt int    `json:"attempt"`
	Input   []byte `json:"input,omitempty"`
}

// RunSubJobs asks a worker to run one attempt of each of some sub-jobs of one job, one after another.
// Carrying several sub-jobs per message divides the queue traffic of large jobs (Policy.CommandSize).
type RunSubJobs struct {
	JobID  string      `json:"job_id"`
	Tenant string      `json:"tenant"`
	Type   string      `json:"type"`
	Runs   []SubJobRun `json:"runs"`
}

// SubJobRun is one attempt of one sub-job inside RunSubJobs.
type SubJobRun struct {
	Index   int64  `json:"index"`
	Attempt int    `json:"attempt"`
	Input   []byte `json:"input,omitempty"`
}

// RunStep3 asks a worker to run step 3 of a job.
type RunStep3 struct {
	JobID   string `json:"job_id"`
	Tenant  string `json:"tenant"`
	Type    string `json:"type"`
	Attempt int    `json:"attempt"`
}

func (e JobStarted) JobKey() string           { return e.JobID }
func (e Step2Started) JobKey() string         { return e.JobID }
func (e Step2Completed) JobKey() string       { return e.JobID }
func (e JobCompleted) JobKey() string         { return e.JobID }
func (e JobFailed) JobKey() string            { return e.JobID }
func (e JobCancelled) JobKey() string         { return e.JobID }
func (e AttemptTimedOut) JobKey() string      { return e.JobID }
func (e Step1Completed) JobKey() string       { return e.JobID }
func (e Step2SubjobCompleted) JobKey() string { return e.JobID }
func (e Step2SubjobFailed) JobKey() string    { return e.JobID }
func (e Step2SubjobsReported) JobKey() string { return e.JobID }
func (e Step3Completed) JobKey() string       { return e.JobID }
func (e StepFailed) JobKey() string           { return e.JobID }
func (e Tick) JobKey() string                 { return e.JobID }
func (c RunStep1) JobKey() string             { return c.JobID }
func (c RunSubJobs) JobKey() string           { return c.JobID }
func (c RunStep3) JobKey() string             { return c.JobID }

// LogEvents lists one value of every event that travels on the event log, for consumers that handle
// them all (projections) or check names (poison).
func LogEvents() []Message {
	return []Message{
		JobStarted{}, Step1Completed{}, Step2Started{}, Step2SubjobsReported{},
		Step2Completed{}, Step3Completed{}, StepFailed{}, JobCompleted{}, JobFailed{}, JobCancelled{},
		AttemptTimedOut{}, Tick{},
	}
}

// WorkCommands lists one value of every command of the work queues.
func WorkCommands() []Message { return []Message{RunStep1{}, RunSubJobs{}, RunStep3{}} }
