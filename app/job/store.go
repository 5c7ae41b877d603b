package job

import (
	"context"
	"errors"
	"time"
)

// ErrDuplicateSubmission: a job with the same tenant and idempotency key exists; its id is returned alongside.
var ErrDuplicateSubmission = errors.New("a job with this idempotency key exists")

// Store is the job store, the one source of truth for job state.
type Store interface {
	// Update runs fn in one transaction. Every state change fn makes and every message it publishes
	// through tx commit together or not at all (the outbox). When ctx already carries a transaction of the
	// same database (a message consumed from a SQL event log), Update joins it, so the consumed offset
	// commits with the effect.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	Reader
	SubJobWriter
}

// Tx is the view of the store inside one transaction.
type Tx interface {
	Job(ctx context.Context, id string) (*Job, error)
	// CreateJob inserts a new job. With a non-empty idempotency key, a second job with the same tenant and
	// key is refused with ErrDuplicateSubmission and the existing job's id.
	CreateJob(ctx context.Context, j *Job, idempotencyKey string) (existingID string, err error)
	SaveJob(ctx context.Context, j *Job) error
	SubJob(ctx context.Context, jobID string, index int64) (*SubJob, error)
	SaveSubJob(ctx context.Context, s *SubJob) error
	// PendingSubJobs loads the never-dispatched sub-jobs of a range, with their inputs, in index order.
	PendingSubJobs(ctx context.Context, jobID string, r Range) ([]*SubJob, error)
	// SaveDispatched persists Job.Dispatch for the given sub-jobs.
	SaveDispatched(ctx context.Context, subs []*SubJob) error
	// DueSubJobs lists sub-jobs whose running attempt passed its deadline or whose retry is due at now.
	DueSubJobs(ctx context.Context, jobID string, now time.Time, limit int) ([]*SubJob, error)
	// AfterCommit runs fn once the transaction committed (never on rollback).
	AfterCommit(fn func())
	// Publish writes events to the event log and commands to the work queue, in this transaction.
	Publish(ctx context.Context, fx Effects) error
}

// SubJobWriter stores the sub-jobs step 1 splits into. Writes are idempotent by (job, index), so a step 1
// that runs twice stores each sub-job once.
type SubJobWriter interface {
	AddSubJobs(ctx context.Context, jobID string, firstIndex int64, inputs [][]byte) error
}

// Reader answers questions about jobs outside any transaction.
type Reader interface {
	GetJob(ctx context.Context, id string) (*Job, error)
	ListJobs(ctx context.Context, filter ListFilter) ([]*Job, error)
	// CountSubJobs returns how many sub-jobs of a job are in each state.
	CountSubJobs(ctx context.Context, jobID string) (map[SubJobState]int64, error)
	// ForEachResult streams the results of a job's succeeded sub-jobs in index order.
	ForEachResult(ctx context.Context, jobID string, fn func(index int64, result []byte) error) error
	// DueJobs lists running jobs that have something for the tick to do at now: an attempt past its
	// deadline or a retry that is due. Ticking only those keeps an idle engine quiet.
	DueJobs(ctx context.Context, now time.Time, afterID string, limit int) ([]string, error)
	// ListSubJobs pages through a job's sub-jobs in index order (inputs and results left out).
	ListSubJobs(ctx context.Context, jobID string, state SubJobState, afterIndex int64, limit int) ([]*SubJob, error)
}

// ListFilter selects jobs; zero fields match everything.
type ListFilter struct {
	Tenant string
	States []State
	Type   string
	// CreatedAfter and CreatedBefore bound the creation time (inclusive, exclusive); zero: unbounded.
	CreatedAfter  time.Time
	CreatedBefore time.Time
	Limit         int
	AfterID       string
}
