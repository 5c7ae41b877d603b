// Package job is the domain core of jobmill: the job aggregate, its sub-jobs, the events they emit and
// the pure rules that move a job through S1 → S2 (fan-out, fan-in) → S3. Nothing here does I/O.
package job

import "fmt"

// State is where a job is in its life.
type State string

const (
	StatePending      State = "PENDING"
	StateStep1Running State = "STEP1_RUNNING"
	StateStep2Running State = "STEP2_RUNNING"
	StateStep3Running State = "STEP3_RUNNING"
	StateCompleted    State = "COMPLETED"
	StateFailed       State = "FAILED"
	StateCancelled    State = "CANCELLED"
)

// Terminal reports whether no event can move the job any further.
func (s State) Terminal() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

// Step is the number of the step a state belongs to (0 when none is running).
func (s State) Step() int {
	switch s {
	case StateStep1Running:
		return 1
	case StateStep2Running:
		return 2
	case StateStep3Running:
		return 3
	}
	return 0
}

// rank orders states along a job's life; it never decreases, so Job.Version can count it (step 1 starts
// without emitting an event).
func (s State) rank() int {
	switch s {
	case StatePending:
		return 0
	case StateStep1Running:
		return 1
	case StateStep2Running:
		return 2
	case StateStep3Running:
		return 3
	}
	return 4
}

// ParseState validates a state name coming from storage or user input.
func ParseState(s string) (State, error) {
	switch st := State(s); st {
	case StatePending, StateStep1Running, StateStep2Running, StateStep3Running, StateCompleted, StateFailed, StateCancelled:
		return st, nil
	}
	return "", fmt.Errorf("unknown job state %q", s)
}

// SubJobState is where one sub-job of step 2 is.
type SubJobState string

const (
	// SubJobPending: split from step 1's output, never dispatched.
	SubJobPending SubJobState = "PENDING"
	// SubJobRunning: dispatched to the work queue; its attempt has a deadline.
	SubJobRunning SubJobState = "RUNNING"
	// SubJobRetryWait: an attempt failed or timed out; the next attempt is due at NextAttemptAt.
	SubJobRetryWait SubJobState = "RETRY_WAIT"
	SubJobSucceeded SubJobState = "SUCCEEDED"
	SubJobFailed    SubJobState = "FAILED"
)

// Finished reports whether the sub-job's outcome is final.
func (s SubJobState) Finished() bool { return s == SubJobSucceeded || s == SubJobFailed }

// ParseSubJobState validates a sub-job state name.
func ParseSubJobState(s string) (SubJobState, error) {
	switch st := SubJobState(s); st {
	case SubJobPending, SubJobRunning, SubJobRetryWait, SubJobSucceeded, SubJobFailed:
		return st, nil
	}
	return "", fmt.Errorf("unknown sub-job state %q", s)
}
