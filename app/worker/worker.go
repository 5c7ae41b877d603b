// Package worker runs the work: step 1 (and its split), each sub-job, step 3, as commands taken from the
// work queue, and reports every outcome as an event on the log. Workers are at-least-once: a command can
// arrive again after a crash, so everything here is safe to repeat.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
)

// EventPublisher puts worker reports on the event log.
type EventPublisher interface {
	Publish(ctx context.Context, events ...job.Message) error
}

// Store is what workers need of the job store.
type Store interface {
	job.SubJobWriter
	job.Reader
}

// Worker executes commands with the registered job types.
type Worker struct {
	types     *jobtype.Registry
	store     Store
	events    EventPublisher
	now       func() time.Time
	logger    *slog.Logger
	splitSize int

	// ended caches which jobs ended, so that sub-jobs of a cancelled or failed job are skipped without a
	// store read per sub-job.
	mu    sync.Mutex
	ended map[string]endedEntry
}

type endedEntry struct {
	ended     bool
	checkedAt time.Time
}

// endedTTL bounds how long a running job's state is trusted from the cache.
const endedTTL = 250 * time.Millisecond

// New returns a worker; every dependency is required.
func New(types *jobtype.Registry, store Store, events EventPublisher, now func() time.Time, logger *slog.Logger) (*Worker, error) {
	if types == nil || store == nil || events == nil || now == nil || logger == nil {
		return nil, errors.New("worker: types, store, events, clock and logger are required")
	}
	return &Worker{types: types, store: store, events: events, now: now, logger: logger, splitSize: 1000, ended: map[string]endedEntry{}}, nil
}

// RunStep1 runs step 1, streams its split into the store and reports Step1Completed with the count.
func (w *Worker) RunStep1(ctx context.Context, c *job.RunStep1) error {
	def, err := w.types.Get(c.Type)
	if err != nil {
		return w.events.Publish(ctx, job.StepFailed{JobID: c.JobID, Step: 1, Attempt: c.Attempt, Error: err.Error(), At: w.now()})
	}
	if w.jobEnded(ctx, c.JobID) {
		return nil
	}
	sc := jobtype.StepContext{JobID: c.JobID, Tenant: c.Tenant, Step: 1, Attempt: c.Attempt, IdempotencyKey: jobtype.StepKey(c.JobID, 1)}
	runCtx, cancel := context.WithTimeout(ctx, def.Policy.StepTimeout)
	defer cancel()
	total, err := w.step1(runCtx, def, sc, c.Input)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // shutting down: let the queue redeliver rather than report a failure
		}
		return w.events.Publish(ctx, job.StepFailed{JobID: c.JobID, Step: 1, Attempt: c.Attempt, Error: err.Error(), At: w.now()})
	}
	return w.events.Publish(ctx, job.Step1Completed{JobID: c.JobID, Attempt: c.Attempt, Total: total, At: w.now()})
}

func (w *Worker) step1(ctx context.Context, def jobtype.Definition, sc jobtype.StepContext, input []byte) (total int64, err error) {
	defer recoverInto(&err)
	output := input
	if def.Step1 != nil {
		if output, err = def.Step1(ctx, sc, input); err != nil {
			return 0, err
		}
	}
	batch := make([][]byte, 0, w.splitSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := w.store.AddSubJobs(ctx, sc.JobID, total-int64(len(batch)), batch); err != nil {
			return fmt.Errorf("store sub-jobs of job %s: %w", sc.JobID, err)
		}
		batch = batch[:0]
		return nil
	}
	err = def.Split(ctx, sc, output, func(in []byte) error {
		batch = append(batch, append([]byte(nil), in...))
		total++
		if len(batch) == cap(batch) {
			return flush()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("split: %w", err)
	}
	return total, flush()
}

// reportEvery bounds how long a command's finished sub-jobs wait to be reported while its other sub-jobs
// run: progress stays visible for slow sub-jobs, while fast ones are reported in one publish.
const reportEvery = time.Second

// RunSubJobs runs one attempt of each sub-job of the command, one after another, and reports their
// outcomes in one Step2SubjobsReported (one per reportEvery while slow sub-jobs run, and one per
// MaxCommandInputBytes of results, so that a report message stays small).
func (w *Worker) RunSubJobs(ctx context.Context, c *job.RunSubJobs) error {
	reports := job.Step2SubjobsReported{JobID: c.JobID}
	def, err := w.types.Get(c.Type)
	if err != nil {
		for _, r := range c.Runs {
			reports.Failed = append(reports.Failed, job.Step2SubjobFailed{JobID: c.JobID, Index: r.Index, Attempt: r.Attempt, Error: err.Error(), At: w.now()})
		}
		return w.report(ctx, reports)
	}
	lastReport := w.now()
	pendingBytes := 0 // bytes of results and errors in reports
	for _, r := range c.Runs {
		if w.jobEnded(ctx, c.JobID) {
			break // cancelled or failed: its results would be ignored anyway
		}
		added, err := w.runSubJob(ctx, def, c, r, &reports)
		if err != nil {
			// Shutting down: report what finished and let the queue redeliver the command.
			return errors.Join(err, w.report(context.WithoutCancel(ctx), reports))
		}
		pendingBytes += added
		if now := w.now(); now.Sub(lastReport) >= reportEvery || pendingBytes >= job.MaxCommandInputBytes {
			if err := w.report(ctx, reports); err != nil {
				return err
			}
			reports, lastReport, pendingBytes = job.Step2SubjobsReported{JobID: c.JobID}, now, 0
		}
	}
	return w.report(ctx, reports)
}

// report publishes the reports, if there are any.
func (w *Worker) report(ctx context.Context, reports job.Step2SubjobsReported) error {
	if reports.Len() == 0 {
		return nil
	}
	return w.events.Publish(ctx, reports)
}

// runSubJob runs one attempt and adds its report, returning the bytes of result or error it added; an
// error only when the worker is shutting down.
func (w *Worker) runSubJob(ctx context.Context, def jobtype.Definition, c *job.RunSubJobs, r job.SubJobRun, reports *job.Step2SubjobsReported) (int, error) {
	sc := jobtype.SubJobContext{JobID: c.JobID, Tenant: c.Tenant, Index: r.Index, Attempt: r.Attempt, IdempotencyKey: jobtype.SubJobKey(c.JobID, r.Index)}
	runCtx, cancel := context.WithTimeout(ctx, def.Policy.SubJobTimeout)
	defer cancel()
	started := w.now()
	result, err := runSubJob(runCtx, def, sc, r.Input)
	ended := w.now()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		reports.Failed = append(reports.Failed, job.Step2SubjobFailed{JobID: c.JobID, Index: r.Index, Attempt: r.Attempt,
			Error: err.Error(), At: ended, Duration: ended.Sub(started)})
		return len(err.Error()), nil
	}
	done := job.Step2SubjobCompleted{JobID: c.JobID, Index: r.Index, Attempt: r.Attempt, Result: result, At: ended, Duration: ended.Sub(started)}
	reports.Completed = append(reports.Completed, done)
	if def.ReportTwice != nil && def.ReportTwice(r.Input) {
		reports.Completed = append(reports.Completed, done)
		return 2 * len(result), nil
	}
	return len(result), nil
}

func runSubJob(ctx context.Context, def jobtype.Definition, sc jobtype.SubJobContext, input []byte) (result []byte, err error) {
	defer recoverInto(&err)
	return def.SubJob(ctx, sc, input)
}

// RunStep3 runs step 3 with a summary of step 2 and reports Step3Completed.
func (w *Worker) RunStep3(ctx context.Context, c *job.RunStep3) error {
	def, err := w.types.Get(c.Type)
	if err != nil {
		return w.events.Publish(ctx, job.StepFailed{JobID: c.JobID, Step: 3, Attempt: c.Attempt, Error: err.Error(), At: w.now()})
	}
	j, err := w.store.GetJob(ctx, c.JobID)
	if errors.Is(err, job.ErrNotFound) {
		w.logger.Warn("step 3 for an unknown job ignored", "job", c.JobID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("load job %s for step 3: %w", c.JobID, err)
	}
	if j.State.Terminal() {
		return nil
	}
	sc := jobtype.StepContext{JobID: c.JobID, Tenant: c.Tenant, Step: 3, Attempt: c.Attempt, IdempotencyKey: jobtype.StepKey(c.JobID, 3)}
	summary := jobtype.Summary{
		Input: j.Input, Total: j.Total, Succeeded: j.Succeeded, Failed: j.Failed,
		Results: func(fn func(int64, []byte) error) error { return w.store.ForEachResult(ctx, c.JobID, fn) },
	}
	runCtx, cancel := context.WithTimeout(ctx, def.Policy.StepTimeout)
	defer cancel()
	output, err := runStep3(runCtx, def, sc, summary)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return w.events.Publish(ctx, job.StepFailed{JobID: c.JobID, Step: 3, Attempt: c.Attempt, Error: err.Error(), At: w.now()})
	}
	return w.events.Publish(ctx, job.Step3Completed{JobID: c.JobID, Attempt: c.Attempt, Output: output, At: w.now()})
}

func runStep3(ctx context.Context, def jobtype.Definition, sc jobtype.StepContext, s jobtype.Summary) (out []byte, err error) {
	defer recoverInto(&err)
	if def.Step3 == nil {
		return nil, nil
	}
	return def.Step3(ctx, sc, s)
}

// jobEnded reports whether the job is cancelled, failed or gone, using a short-lived cache.
func (w *Worker) jobEnded(ctx context.Context, jobID string) bool {
	now := time.Now()
	w.mu.Lock()
	e, ok := w.ended[jobID]
	w.mu.Unlock()
	if ok && (e.ended || now.Sub(e.checkedAt) < endedTTL) {
		return e.ended
	}
	j, err := w.store.GetJob(ctx, jobID)
	ended := false
	switch {
	case errors.Is(err, job.ErrNotFound):
		ended = true
	case err != nil:
		return false // cannot tell: run it; the manager ignores what does not count
	default:
		ended = j.State.Terminal()
	}
	w.mu.Lock()
	if len(w.ended) > 10000 {
		clear(w.ended) // bounded memory with many jobs
	}
	w.ended[jobID] = endedEntry{ended: ended, checkedAt: now}
	w.mu.Unlock()
	return ended
}

// recoverInto turns a panic in user code into the attempt's error, so one bad sub-job cannot crash a worker.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
	}
}
