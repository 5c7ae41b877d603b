// Package timeline is the detailed status view of jobs, built from the event log by a consumer group of
// its own ("status"): per job, the ordered timeline of its events and the state of each sub-job as its
// reports show it, with attempts, durations and the last error. It can lag or fail without holding up the
// manager, and it is rebuilt by replaying the log after Reset.
//
// Every event is applied at most once (by its message id), and the views a job's events produce do not
// depend on the order in which they arrive (RabbitMQ keeps none): only the positions of the timeline
// record the order in which they were applied.
package timeline

import (
	"context"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Event kinds: the names of the events on the log.
const (
	KindJobStarted           = "JobStarted"
	KindStep1Completed       = "Step1Completed"
	KindStep2Started         = "Step2Started"
	KindStep2SubjobCompleted = "Step2SubjobCompleted"
	KindStep2SubjobFailed    = "Step2SubjobFailed"
	KindStep2Completed       = "Step2Completed"
	KindStep3Completed       = "Step3Completed"
	KindStepFailed           = "StepFailed"
	KindJobCompleted         = "JobCompleted"
	KindJobFailed            = "JobFailed"
	KindJobCancelled         = "JobCancelled"
	KindAttemptTimedOut      = "AttemptTimedOut"
)

const (
	// MaxDetail is how many bytes of an error or reason an entry keeps: workers' errors can be long, and
	// every report writes one.
	MaxDetail = 1024
	// MaxPage caps every page the read side returns, whatever the caller asks for.
	MaxPage = 500
	// NoSubJob is the Index of an entry that is not about a sub-job.
	NoSubJob int64 = -1
)

// Entry is one event in a job's timeline.
type Entry struct {
	// Pos numbers a job's entries 1, 2, … in the order the projection applied them. It never changes
	// once given, so it pages the timeline; after a rebuild it follows the replay's order.
	Pos     int64
	EventID string
	Kind    string
	// Seq is the job's sequence number on the manager's events, 0 on workers' reports.
	Seq int64
	At  time.Time
	// Step is 1, 2 or 3, or 0 for events about the whole job (JobStarted and the job's end).
	Step int
	// Index is the sub-job's, or NoSubJob.
	Index int64
	// Attempt is the attempt of the step or sub-job the event reports on (0 when it names none).
	Attempt int
	// Duration is how long a sub-job's attempt ran on the worker (reports of step 2 only).
	Duration time.Duration
	// Detail is the error or reason the event carries, cut to MaxDetail bytes.
	Detail string
}

// Header is what the projection knows about a job as a whole.
type Header struct {
	JobID string
	// Tenant and Type come from JobStarted: empty while it has not been applied.
	Tenant string
	Type   string
	// State follows the manager's events: the state the newest of them (by Seq) put the job in. Empty
	// while none has been applied.
	State    job.State
	StateSeq int64
	// Seq is the highest Seq of the manager's events applied: equal to the job's own Seq once the
	// projection has caught up with the manager.
	Seq   int64
	Total int64
	// Step2Closed: every sub-job had its final outcome (Step2Completed, or final counters that say so).
	Step2Closed bool
	StartedAt   time.Time
	EndedAt     time.Time
	// Error is the reason the job failed or was cancelled, cut to MaxDetail bytes.
	Error string
	// Counts are the manager's final counters, from the event that ended the job (zero before).
	Counts job.Counts
}

// SubJob is one sub-job as its reports show it. Only sub-jobs with at least one report or time-out have
// one; Header.Total says how many there are.
type SubJob struct {
	Index int64
	// State is SUCCEEDED once any attempt reported success (the manager counts the first success and
	// treats later ones as duplicates); FAILED when an attempt failed and step 2 has closed without a
	// success; RETRY_WAIT when an attempt failed and the sub-job's outcome is still open. The log does
	// not say when an attempt starts, so a sub-job waiting for or running its next attempt, or one that
	// used up its attempts while step 2 still runs, is RETRY_WAIT.
	State job.SubJobState
	// Attempts is the highest attempt number reported or timed out.
	Attempts int
	// FailedAttempts counts the attempts that failed or timed out, each once.
	FailedAttempts int
	// TimedOut counts the attempts the manager timed out.
	TimedOut int
	// LastError is the error of the latest failed attempt, kept after a later success; LastErrorAt is
	// when that attempt ended.
	LastError   string
	LastErrorAt time.Time
	// Duration is how long the successful attempt ran on the worker.
	Duration time.Duration
	// FinishedAt is when the successful attempt ended, or the last failure of a FAILED sub-job.
	FinishedAt time.Time
}

// Summary is a job's header with the size of its timeline and its sub-jobs by state.
type Summary struct {
	Header
	// Events is how many entries the timeline holds.
	Events int64
	// SubJobs counts the sub-jobs with a report by state.
	SubJobs map[job.SubJobState]int64
}

// Store keeps the projection. Writes happen in Update only, in one transaction per event.
type Store interface {
	// Update runs fn in one transaction; when ctx carries a transaction of the log consumer's batch, it
	// joins it, so the consumed offset commits with the projection's writes.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// Reset deletes every job, entry and sub-job of the projection.
	Reset(ctx context.Context) error

	// Summary returns a job's header, entry count and sub-job counts; job.ErrNotFound when the
	// projection has nothing of the job.
	Summary(ctx context.Context, jobID string) (Summary, error)
	// Entries returns up to limit entries of a job with Pos > afterPos, in Pos order.
	Entries(ctx context.Context, jobID string, afterPos int64, limit int) ([]Entry, error)
	// SubJobs returns up to limit sub-jobs of a job with Index > afterIndex, in index order, in the
	// given state (any state when empty).
	SubJobs(ctx context.Context, jobID string, state job.SubJobState, afterIndex int64, limit int) ([]SubJob, error)
}

// Tx is the store inside one event's transaction.
type Tx interface {
	// LockHeader returns the job's header, creating an empty one (JobID only) when the job is new to
	// the projection, and keeps other transactions from changing the job until this one ends: the
	// events of one job are applied one after the other.
	LockHeader(ctx context.Context, jobID string) (Header, error)
	// SaveHeader writes a header that LockHeader returned.
	SaveHeader(ctx context.Context, h Header) error
	// Append adds e to the job's timeline as its next entry, numbering it, unless an entry with the
	// same EventID exists: then it writes nothing and returns false.
	Append(ctx context.Context, jobID string, e Entry) (bool, error)
	// SubJobEntries returns every entry of one sub-job of a job (Index = index), in Pos order.
	SubJobEntries(ctx context.Context, jobID string, index int64) ([]Entry, error)
	// SaveSubJob inserts or replaces one sub-job of a job.
	SaveSubJob(ctx context.Context, jobID string, s SubJob) error
	// FailWaitingSubJobs turns every RETRY_WAIT sub-job of a job into FAILED, finished at its
	// LastErrorAt: step 2 closed, so no further attempt will run.
	FailWaitingSubJobs(ctx context.Context, jobID string) error
}
