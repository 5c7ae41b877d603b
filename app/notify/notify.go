// Package notify tells the outside world about jobs: when a job starts, when each of its steps starts and
// finishes, and when it completes, fails or is cancelled. It is a consumer of the event log like any other
// projection: Apply only records, in the consumer's transaction, one delivery per notification and
// matching webhook; a Deliverer sends the recorded deliveries separately, with retries, exponential
// back-off and a dead-letter state. No network I/O ever happens on the path of an event, so a slow or
// unreachable receiver can hold up nothing but its own deliveries.
//
// Every notification has a stable key (job, type, step), and a delivery's id is derived from its webhook
// and that key: duplicated, redelivered and replayed events record each delivery once, and a receiver
// that sees the same delivery id twice (a retry, a redelivery, a rebuild) can drop the second.
package notify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Type names a kind of notification, as receivers see it and as webhooks filter it.
type Type string

const (
	TypeJobStarted   Type = "job.started"
	TypeStepStarted  Type = "step.started"
	TypeStepFinished Type = "step.finished"
	TypeJobCompleted Type = "job.completed"
	TypeJobFailed    Type = "job.failed"
	TypeJobCancelled Type = "job.cancelled"
)

// Types lists every notification type.
func Types() []Type {
	return []Type{TypeJobStarted, TypeStepStarted, TypeStepFinished, TypeJobCompleted, TypeJobFailed, TypeJobCancelled}
}

// Known says whether t is a notification type.
func (t Type) Known() bool {
	for _, k := range Types() {
		if t == k {
			return true
		}
	}
	return false
}

// Notification is one thing that happened to a job.
type Notification struct {
	Type   Type
	JobID  string
	Tenant string
	// Step is 1, 2 or 3 for step.started and step.finished, 0 otherwise.
	Step int
	// At is when it happened: the time of the event it comes from.
	At time.Time
	// Data holds the type's details as a JSON object (see Notifications).
	Data json.RawMessage
}

// Key identifies the notification: events that mean the same thing (a worker's report sent twice, an event
// delivered again, a replayed log) give notifications with the same key.
func (n Notification) Key() string {
	return n.JobID + "/" + string(n.Type) + "/" + strconv.Itoa(n.Step)
}

// DeliveryID is the id of the delivery of n to a webhook: the same for every event that yields n, so that
// stores record it once and receivers can recognise it when it comes again.
func DeliveryID(webhookID string, n Notification) string {
	sum := sha256.Sum256([]byte(webhookID + "\x00" + n.Key()))
	return hex.EncodeToString(sum[:16])
}

// Data of each notification type. Fields that an event does not carry are left out.
type (
	jobStartedData struct {
		JobType string `json:"job_type"`
		Seq     int64  `json:"seq,omitempty"`
	}
	stepData struct {
		Attempt   int   `json:"attempt,omitempty"`
		Total     int64 `json:"total,omitempty"`
		Succeeded int64 `json:"succeeded,omitempty"`
		Failed    int64 `json:"failed,omitempty"`
		Seq       int64 `json:"seq,omitempty"`
	}
	jobEndedData struct {
		Reason string     `json:"reason,omitempty"`
		Seq    int64      `json:"seq,omitempty"`
		Counts job.Counts `json:"counts"`
	}
)

func data(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("notify: marshal %T: %v", v, err)) // plain structs of numbers and strings
	}
	return b
}

// Notifications maps an event of the log to the notifications it means; most events mean none. Only
// notifications from JobStarted carry the tenant; the others' is looked up.
//
//	JobStarted      → job.started, step.started(1)
//	Step1Completed  → step.finished(1)  (a worker's report: it may come twice; the key makes it once)
//	Step2Started    → step.started(2)
//	Step2Completed  → step.finished(2), step.started(3)
//	Step3Completed  → step.finished(3)
//	JobCompleted    → job.completed
//	JobFailed       → job.failed
//	JobCancelled    → job.cancelled
func Notifications(e job.Message) []Notification {
	n := func(t Type, jobID string, step int, at time.Time, d any) Notification {
		return Notification{Type: t, JobID: jobID, Step: step, At: at, Data: data(d)}
	}
	switch e := e.(type) {
	case job.JobStarted:
		started := n(TypeJobStarted, e.JobID, 0, e.At, jobStartedData{JobType: e.Type, Seq: e.Seq})
		step1 := n(TypeStepStarted, e.JobID, 1, e.At, stepData{})
		started.Tenant, step1.Tenant = e.Tenant, e.Tenant
		return []Notification{started, step1}
	case job.Step1Completed:
		return []Notification{n(TypeStepFinished, e.JobID, 1, e.At, stepData{Attempt: e.Attempt, Total: e.Total})}
	case job.Step2Started:
		return []Notification{n(TypeStepStarted, e.JobID, 2, e.At, stepData{Total: e.Total, Seq: e.Seq})}
	case job.Step2Completed:
		return []Notification{
			n(TypeStepFinished, e.JobID, 2, e.At, stepData{Succeeded: e.Succeeded, Failed: e.Failed, Seq: e.Seq}),
			n(TypeStepStarted, e.JobID, 3, e.At, stepData{Seq: e.Seq}),
		}
	case job.Step3Completed:
		return []Notification{n(TypeStepFinished, e.JobID, 3, e.At, stepData{Attempt: e.Attempt})}
	case job.JobCompleted:
		return []Notification{n(TypeJobCompleted, e.JobID, 0, e.At, jobEndedData{Seq: e.Seq, Counts: e.Counts})}
	case job.JobFailed:
		return []Notification{n(TypeJobFailed, e.JobID, 0, e.At, jobEndedData{Reason: e.Reason, Seq: e.Seq, Counts: e.Counts})}
	case job.JobCancelled:
		return []Notification{n(TypeJobCancelled, e.JobID, 0, e.At, jobEndedData{Reason: e.Reason, Seq: e.Seq, Counts: e.Counts})}
	}
	return nil
}
