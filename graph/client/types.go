package client

import (
	"encoding/json"
	"time"
)

// JobState is where a job is in its life.
type JobState string

// The states of the schema's JobState enum.
const (
	StatePending      JobState = "PENDING"
	StateStep1Running JobState = "STEP1_RUNNING"
	StateStep2Running JobState = "STEP2_RUNNING"
	StateStep3Running JobState = "STEP3_RUNNING"
	StateCompleted    JobState = "COMPLETED"
	StateFailed       JobState = "FAILED"
	StateCancelled    JobState = "CANCELLED"
)

// Terminal reports whether the job has ended.
func (s JobState) Terminal() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// StepState is where one step of a job is.
type StepState string

// The states of the schema's StepState enum.
const (
	StepNotStarted StepState = "NOT_STARTED"
	StepRunning    StepState = "RUNNING"
	StepFinished   StepState = "FINISHED"
)

// EventKind is what a JobEvent reports.
type EventKind string

// The kinds of the schema's JobEventKind enum.
const (
	EventSnapshot    EventKind = "SNAPSHOT"
	EventStepStarted EventKind = "STEP_STARTED"
	EventProgress    EventKind = "PROGRESS"
	EventCompleted   EventKind = "COMPLETED"
	EventFailed      EventKind = "FAILED"
	EventCancelled   EventKind = "CANCELLED"
)

// Terminal reports whether the event is the last of its job.
func (k EventKind) Terminal() bool {
	return k == EventCompleted || k == EventFailed || k == EventCancelled
}

// Job is a job as the API shows it. Optional times are zero when absent.
type Job struct {
	ID    string   `json:"id"`
	Type  string   `json:"type"`
	State JobState `json:"state"`
	// Progress is the share of sub-jobs with a final outcome, 0..1.
	Progress float64 `json:"progress"`
	// Seq increases with every visible change.
	Seq    int64        `json:"seq"`
	Counts SubjobCounts `json:"counts"`
	Steps  []Step       `json:"steps"`
	// Input is the job's input; JobEvent jobs leave it out.
	Input     json.RawMessage `json:"input"`
	Output    json.RawMessage `json:"output"`
	Error     string          `json:"error"`
	Deadline  time.Time       `json:"deadline"`
	CreatedAt time.Time       `json:"createdAt"`
	UpdatedAt time.Time       `json:"updatedAt"`
	EndedAt   time.Time       `json:"endedAt"`
}

// UnmarshalJSON decodes a job, leaving Input and Output nil when they are null.
func (j *Job) UnmarshalJSON(b []byte) error {
	type plain Job
	if err := json.Unmarshal(b, (*plain)(j)); err != nil {
		return err
	}
	if string(j.Input) == "null" {
		j.Input = nil
	}
	if string(j.Output) == "null" {
		j.Output = nil
	}
	return nil
}

// SubjobCounts count a job's sub-jobs by outcome.
type SubjobCounts struct {
	Total      int64 `json:"total"`
	Succeeded  int64 `json:"succeeded"`
	Failed     int64 `json:"failed"`
	InFlight   int64 `json:"inFlight"`
	Retries    int64 `json:"retries"`
	TimedOut   int64 `json:"timedOut"`
	Duplicates int64 `json:"duplicates"`
	Late       int64 `json:"late"`
}

// Step is one of a job's three steps.
type Step struct {
	Number     int       `json:"number"`
	State      StepState `json:"state"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// JobEvent is one message of a job's live view.
type JobEvent struct {
	// Seq is the job's seq after this change; it increases within a stream.
	Seq  int64     `json:"seq"`
	Kind EventKind `json:"kind"`
	// Step is the step the job is in; 0 before step 1 and after the end.
	Step int `json:"step"`
	Job  Job `json:"job"`
}

// The fields the client selects. Events leave out the input, which never changes.
const (
	jobFields = `id type state progress seq
  counts { total succeeded failed inFlight retries timedOut duplicates late }
  steps { number state startedAt finishedAt }
  input output error deadline createdAt updatedAt endedAt`
	eventJobFields = `id type state progress seq
  counts { total succeeded failed inFlight retries timedOut duplicates late }
  steps { number state startedAt finishedAt }
  output error deadline createdAt updatedAt endedAt`
	userErrorFields = `code message field ... on JobError { jobId }`
)

const (
	jobQuery = `query Job($id: ID!) {
  job(id: $id) { ` + jobFields + ` }
}`
	startJobMutation = `mutation StartJob($input: StartJobInput!) {
  startJob(input: $input) {
    job { ` + jobFields + ` }
    userErrors { ` + userErrorFields + ` }
  }
}`
	cancelJobMutation = `mutation CancelJob($input: CancelJobInput!) {
  cancelJob(input: $input) {
    job { ` + jobFields + ` }
    userErrors { ` + userErrorFields + ` }
  }
}`
	jobEventsSubscription = `subscription JobEvents($jobId: ID!, $afterSeq: Int) {
  jobEvents(jobId: $jobId, afterSeq: $afterSeq) {
    seq kind step
    job { ` + eventJobFields + ` }
  }
}`
)
