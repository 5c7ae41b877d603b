// Package stats is the statistics projection: it folds the event log into statistics per job, and reads
// them back per job or aggregated over a tenant's or a job type's jobs.
//
// What a job's statistics are made of, and why they stay exact although every transport delivers at
// least once and RabbitMQ keeps no order:
//
//   - Step durations come from the manager's and workers' timestamps: step 1 from JobStarted to the
//     earliest Step1Completed, step 2 from Step2Started to Step2Completed, step 3 from Step2Completed to
//     JobCompleted (to the earliest Step3Completed while JobCompleted has not been seen). Each is set once
//     or kept at its minimum, so neither a repeat nor the order of arrival changes it.
//   - A sub-job succeeds once: the success reports of one sub-job (a worker may run and report an
//     attempt twice, and a timed-out attempt may still finish) count as one success, the one with the
//     earliest time (then the shortest duration, then the lowest attempt). That report alone gives the
//     sub-job's duration to the job's sketch and its completion to the throughput series; a report that
//     arrives later but ranks first replaces it, so the result does not depend on the order of arrival.
//   - A sub-job's success counts even when the manager ignored it as late: the reports do not say what
//     the manager consumed first. Once step 2 closed the counters are the manager's, so Succeeded
//     leaves such a success out, but SubJobs and Throughput include the rare sub-job that failed for good
//     while an attempt that had timed out went on to report success.
//   - A failed attempt counts once under its normalised error text (the least text, byte-wise, when one
//     attempt was reported failed with two texts); a time-out counts once per attempt.
//   - Attempts are counted per sub-job and step as the highest attempt number reported or timed out
//     (attempts are numbered from 1, so attempt 3 means three ran).
//   - A report delivered again with the same event id changes nothing; one reported again under a new id
//     counts as a duplicate while the job runs.
//   - The counters of an ended job are the manager's exact final Counts, carried by its terminal event.
//     While the job runs they are what the projection has seen (failed and late are known only from the
//     Step2Completed and terminal events).
//   - The terminal event closes the job: the per-event and per-sub-job bookkeeping is deleted and only
//     the KeptErrors most frequent error texts are kept. Any report applied after that changes nothing. In
//     log order such a report is late anyway; on RabbitMQ a report overtaken by its job's end is left out
//     of the distributions (the counters are exact regardless).
//
// Aggregates are computed on read from the per-job statistics: counters are summed, per-job duration
// sketches merged, throughput buckets added up and regrouped into wider buckets.
package stats

import (
	"context"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Stats are the statistics of one job or of a set of jobs.
type Stats struct {
	// Jobs counts the jobs: 1 for JobStats. JobsCompleted, JobsFailed and JobsCancelled count those that
	// ended so; the rest are running.
	Jobs          int64
	JobsCompleted int64
	JobsFailed    int64
	JobsCancelled int64

	// Run is how long jobs took from JobStarted to their end (ended jobs only).
	Run Durations
	// Steps are the durations of steps 1, 2 and 3 of the jobs that went through them. For one job each
	// has Count 1 and every field is that step's exact duration; for several jobs Mean is exact and the
	// quantiles are within RelativeAccuracy.
	Steps [3]Durations
	// SubJobs is the distribution of the run time of successful sub-jobs (of the attempt that
	// succeeded, as the worker measured it). Count is the number of sub-jobs with a success report.
	SubJobs Durations

	// Throughput is the number of sub-jobs completed in each bucket of BucketWidth, from the first
	// bucket with a completion to the last, empty buckets included.
	Throughput  []Bucket
	BucketWidth time.Duration

	// Total is the number of sub-jobs step 1 split the jobs into.
	Total     int64
	Succeeded int64
	// Failed counts sub-jobs that failed for good.
	Failed int64
	// Attempts counts the attempts of steps 1 and 3 and of sub-jobs that were reported or timed out.
	Attempts int64
	// Retries counts attempts started after a failure or a time-out.
	Retries  int64
	TimedOut int64
	// Duplicates counts reports absorbed because their attempt or sub-job had been reported before.
	Duplicates int64
	// Late counts reports that arrived after their step or their job had ended, and were ignored.
	Late int64

	// TopErrors are the most frequent error texts of failed attempts, most frequent first.
	TopErrors []ErrorCount
}

// Durations summarises a set of durations. Count and Mean are exact; the quantiles are within
// RelativeAccuracy (exact when Count is 1).
type Durations struct {
	Count         int64
	Mean          time.Duration
	P50, P95, P99 time.Duration
}

// Bucket is one interval of a throughput series.
type Bucket struct {
	Start     time.Time
	Completed int64
}

// ErrorCount is how many failed attempts reported one (normalised) error text.
type ErrorCount struct {
	Error string
	Count int64
}

// Filter selects the jobs of an aggregate; zero fields match everything. Tenant "" is every tenant: the
// API must always pass the caller's own.
type Filter struct {
	Tenant string
	Type   string
	// CreatedAfter and CreatedBefore bound the job's creation (its JobStarted time): inclusive, exclusive.
	CreatedAfter  time.Time
	CreatedBefore time.Time
	// Bucket is the narrowest throughput bucket wanted; wider ones are used when the series would
	// otherwise have more than MaxBuckets buckets. Zero picks the narrowest that fits.
	Bucket time.Duration
	// TopErrors is how many error texts to return; zero means DefaultTopErrors.
	TopErrors int
}

const (
	// MaxBuckets bounds the length of a throughput series.
	MaxBuckets = 240
	// DefaultTopErrors is how many error texts the statistics list unless asked otherwise.
	DefaultTopErrors = 10
	// KeptErrors is how many distinct error texts an ended job keeps; the rest are counted together under
	// OtherErrors.
	KeptErrors = 100
	// OtherErrors stands for the error texts an ended job did not keep.
	OtherErrors = "(other errors)"
	// MaxErrorLength is the length, in characters, an error text is cut to.
	MaxErrorLength = 200
)

// Outcome is how a job ended; empty while it runs.
type Outcome string

const (
	OutcomeRunning   Outcome = ""
	OutcomeCompleted Outcome = "completed"
	OutcomeFailed    Outcome = "failed"
	OutcomeCancelled Outcome = "cancelled"
)

// Record is one job's statistics as stored. Times have microsecond precision, as the store keeps them.
type Record struct {
	JobID  string
	Tenant string
	Type   string
	// CreatedAt is JobStarted's time; zero until it has been applied.
	CreatedAt time.Time
	// Step1Done and Step3Done are the earliest Step1Completed and Step3Completed times.
	Step1Done  time.Time
	Step2Start time.Time
	Step2Done  time.Time
	Step3Done  time.Time
	EndedAt    time.Time
	Outcome    Outcome
	// Total is Step2Started's count of sub-jobs.
	Total int64

	// Step1Attempts and Step3Attempts are the highest attempt numbers seen for steps 1 and 3.
	Step1Attempts int64
	Step3Attempts int64
	// SubJobs counts the sub-jobs with any report or time-out; SubJobAttempts sums their highest attempt.
	SubJobs        int64
	SubJobAttempts int64
	// Succeeded counts the sub-jobs with a success report.
	Succeeded int64
	// TimedOut counts the distinct attempts timed out; Duplicates the reports absorbed.
	TimedOut   int64
	Duplicates int64

	// Step2Closed is set by Step2Completed, with the manager's counts at that moment.
	Step2Closed    bool
	Step2Succeeded int64
	Step2Failed    int64

	// Final are the manager's counters from the terminal event (valid when Outcome is set).
	Final job.Counts

	// DurationSum is the sum of the durations in Durations, the encoded Sketch of successful sub-jobs.
	DurationSum time.Duration
	Durations   []byte
}

// Ended says whether the job's terminal event has been applied.
func (r Record) Ended() bool { return r.Outcome != OutcomeRunning }

// Started says whether the job's JobStarted has been applied (and so its tenant and type are known).
func (r Record) Started() bool { return !r.CreatedAt.IsZero() }

// SubJobRecord is what one sub-job's reports said so far: kept while the job runs.
type SubJobRecord struct {
	JobID string
	Index int64
	// MaxAttempt is the highest attempt reported or timed out.
	MaxAttempt int64
	// SuccessAttempt is the attempt of the success that counts (0: none yet), with its time and duration.
	SuccessAttempt  int64
	SuccessAt       time.Time
	SuccessDuration time.Duration
}

// AttemptKey names one attempt of one step (Index is 0 for steps 1 and 3).
type AttemptKey struct {
	JobID   string
	Step    int
	Index   int64
	Attempt int64
}

// AttemptRecord is what was reported about one attempt that failed or timed out: kept while the job runs.
type AttemptRecord struct {
	AttemptKey
	// Error is the normalised error text the attempt's failure counts under ("" while none was reported).
	Error    string
	TimedOut bool
}

// Query selects the stored jobs a read covers: one job by JobID, or the jobs a Filter matches. A filter
// leaves out jobs whose JobStarted has not been applied yet (their tenant is unknown).
type Query struct {
	JobID         string
	Tenant        string
	Type          string
	CreatedAfter  time.Time
	CreatedBefore time.Time
}

// Store keeps the statistics. Every write of one event happens in one Update.
type Store interface {
	// Update runs fn in one transaction: the log consumer's batch transaction when ctx carries one, so
	// that the consumer's offset commits with the statistics.
	Update(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// Reset deletes all statistics.
	Reset(ctx context.Context) error
	// Jobs calls fn with the record of every job q selects.
	Jobs(ctx context.Context, q Query, fn func(Record) error) error
	// CompletionSpan returns the first and last one-second buckets with completions of the jobs q
	// selects (zero times when there are none).
	CompletionSpan(ctx context.Context, q Query) (first, last time.Time, err error)
	// Completions returns the completions of the jobs q selects, summed per bucket of width (a whole
	// number of seconds; buckets start at multiples of width since the Unix epoch), in time order,
	// empty buckets left out.
	Completions(ctx context.Context, q Query, width time.Duration) ([]Bucket, error)
	// TopErrors returns the n most frequent error texts of the jobs q selects, most frequent first (ties
	// in byte order of the text).
	TopErrors(ctx context.Context, q Query, n int) ([]ErrorCount, error)
}

// Tx is one transaction of the statistics store.
type Tx interface {
	// LockJob returns the job's record, an empty one (with JobID set) if it has none yet, and holds the
	// job until the transaction ends, so that events of one job applied at once by two consumers cannot
	// lose each other's changes.
	LockJob(ctx context.Context, jobID string) (Record, error)
	// SaveJob stores a record LockJob returned (and the caller changed).
	SaveJob(ctx context.Context, r Record) error
	// MarkEvent records that the job's event was applied; false when it had been before.
	MarkEvent(ctx context.Context, jobID, eventID string) (bool, error)
	// SubJob returns a sub-job's record; false when it has none.
	SubJob(ctx context.Context, jobID string, index int64) (SubJobRecord, bool, error)
	SaveSubJob(ctx context.Context, s SubJobRecord) error
	// Attempt returns an attempt's record; false when it has none.
	Attempt(ctx context.Context, key AttemptKey) (AttemptRecord, bool, error)
	SaveAttempt(ctx context.Context, a AttemptRecord) error
	// AddCompletions adds delta (which may be negative) to the job's completions in the one-second
	// bucket starting at bucket.
	AddCompletions(ctx context.Context, jobID string, bucket time.Time, delta int64) error
	// AddError adds delta (which may be negative) to the job's count of failed attempts with that text.
	AddError(ctx context.Context, jobID, text string, delta int64) error
	// JobErrors returns the job's error counts, in no particular order.
	JobErrors(ctx context.Context, jobID string) ([]ErrorCount, error)
	// ReplaceErrors replaces the job's error counts with errs.
	ReplaceErrors(ctx context.Context, jobID string, errs []ErrorCount) error
	// DropBookkeeping deletes the job's applied event ids, sub-job and attempt records.
	DropBookkeeping(ctx context.Context, jobID string) error
}
