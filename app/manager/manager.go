// Package manager is the workflow manager: one reaction per event of the log, each deciding through the
// job aggregate and committing the state change with the events and commands it emits in one transaction.
// The manager only decides; workers do all the work.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Observer is told about decisions worth measuring. Calls happen after the transaction committed.
type Observer interface {
	// Step2Closed: Step2Completed for a job committed; fanIn is from consuming the outcome that closed
	// step 2 to that commit.
	Step2Closed(jobID string, fanIn time.Duration)
	// Absorbed: a report was a duplicate or arrived late and changed nothing but a counter.
	Absorbed(jobID string, outcome job.Outcome)
	// JobEnded: a job reached a terminal state.
	JobEnded(jobID string, state job.State)
}

// SubJobObserver is an Observer that also counts sub-jobs finishing (the completion rate). The manager
// tells it after each committed reaction that made sub-job outcomes final: succeeded, or failed after the
// last attempt. Reports absorbed as duplicates or late never count.
type SubJobObserver interface {
	SubJobsFinished(jobID string, succeeded, failed int64)
}

// Config tunes the manager.
type Config struct {
	// Window is the most sub-jobs of one job in flight at once: dispatch streams the rest as they finish.
	Window int
	// DueBatch caps how many timed-out or due sub-jobs one tick handles (the next tick takes the rest).
	DueBatch int
}

// Manager holds the reactions.
type Manager struct {
	store    job.Store
	cfg      Config
	now      func() time.Time
	observer Observer
	logger   *slog.Logger
}

// New returns a manager; every dependency is required.
func New(store job.Store, cfg Config, now func() time.Time, observer Observer, logger *slog.Logger) (*Manager, error) {
	if store == nil || now == nil || observer == nil || logger == nil {
		return nil, errors.New("manager: store, clock, observer and logger are required")
	}
	if cfg.Window < 1 {
		return nil, fmt.Errorf("manager: window must be at least 1 (got %d)", cfg.Window)
	}
	if cfg.DueBatch < 1 {
		cfg.DueBatch = 1000
	}
	return &Manager{store: store, cfg: cfg, now: now, observer: observer, logger: logger}, nil
}

// decision changes a loaded job and says what to emit.
type decision func(ctx context.Context, tx job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error)

// apply is the one transactional shape of every reaction: load, decide, dispatch, save, publish.
func (m *Manager) apply(ctx context.Context, jobID string, decide decision) error {
	return m.store.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		j, err := tx.Job(ctx, jobID)
		if errors.Is(err, job.ErrNotFound) {
			// Nothing can ever apply this message; retrying would only block the log.
			m.logger.Warn("event for an unknown job ignored", "job", jobID)
			return nil
		}
		if err != nil {
			return err
		}
		before := j.State
		succeededBefore, failedBefore := j.Succeeded, j.Failed
		now := m.now()
		fx, outcome, err := decide(ctx, tx, j, now)
		if err != nil {
			return err
		}
		if fx.Dispatch.Len() > 0 {
			cmds, err := m.dispatch(ctx, tx, j, fx.Dispatch, now)
			var missing *missingSubJobsError
			switch {
			case errors.As(err, &missing):
				m.logger.Error("job aborted: its sub-jobs are missing from the store", "job", j.ID, "err", err)
				fx.Merge(j.Abort(err.Error(), now))
			case err != nil:
				return err
			default:
				fx.Commands = append(fx.Commands, cmds...)
			}
		}
		if err := tx.SaveJob(ctx, j); err != nil {
			return err
		}
		if err := tx.Publish(ctx, fx); err != nil {
			return err
		}
		m.afterCommit(tx, j, before, fx, outcome, j.Succeeded-succeededBefore, j.Failed-failedBefore)
		return nil
	})
}

func (m *Manager) afterCommit(tx job.Tx, j *job.Job, before job.State, fx job.Effects, outcome job.Outcome, succeeded, failed int64) {
	jobID, state := j.ID, j.State
	var closed *job.Step2Completed
	for _, e := range fx.Events {
		if c, ok := e.(job.Step2Completed); ok {
			closed = &c
		}
	}
	tx.AfterCommit(func() {
		if outcome != job.Applied {
			m.observer.Absorbed(jobID, outcome)
		}
		if so, ok := m.observer.(SubJobObserver); ok && (succeeded > 0 || failed > 0) {
			so.SubJobsFinished(jobID, succeeded, failed)
		}
		if closed != nil {
			// The manager's clock, not the wall clock: LastOutcomeAt was read from it too.
			m.observer.Step2Closed(jobID, m.now().Sub(closed.LastOutcomeAt))
		}
		if state != before && state.Terminal() {
			m.observer.JobEnded(jobID, state)
		}
	})
}

// dispatch starts the first attempt of every pending sub-job in r.
func (m *Manager) dispatch(ctx context.Context, tx job.Tx, j *job.Job, r job.Range, now time.Time) ([]job.Message, error) {
	subs, err := tx.PendingSubJobs(ctx, j.ID, r)
	if err != nil {
		return nil, fmt.Errorf("dispatch sub-jobs %d..%d of job %s: %w", r.From, r.To, j.ID, err)
	}
	if int64(len(subs)) != r.Len() {
		return nil, &missingSubJobsError{jobID: j.ID, r: r, found: len(subs)}
	}
	cmds := j.Dispatch(subs, now)
	if err := tx.SaveDispatched(ctx, subs); err != nil {
		return nil, fmt.Errorf("dispatch sub-jobs of job %s: %w", j.ID, err)
	}
	return cmds, nil
}

// missingSubJobsError: step 1 reported more sub-jobs than the store holds pending in a range.
type missingSubJobsError struct {
	jobID string
	r     job.Range
	found int
}

func (e *missingSubJobsError) Error() string {
	return fmt.Sprintf("dispatch sub-jobs %d..%d of job %s: found %d of %d pending", e.r.From, e.r.To, e.jobID, e.found, e.r.Len())
}

// OnJobStarted sends step 1 to a worker.
func (m *Manager) OnJobStarted(ctx context.Context, e *job.JobStarted) error {
	return m.apply(ctx, e.JobID, func(_ context.Context, _ job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		fx, o := j.StartStep1(now)
		return fx, o, nil
	})
}

// OnStep1Completed starts step 2: the sub-jobs step 1 stored are dispatched in windows.
func (m *Manager) OnStep1Completed(ctx context.Context, e *job.Step1Completed) error {
	return m.apply(ctx, e.JobID, func(_ context.Context, _ job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		fx, o := j.CompleteStep1(e.Total, m.cfg.Window, now)
		return fx, o, nil
	})
}

// OnSubJobsReported is the fan-in: one transaction for a worker's reports, O(1) per report, each guarded
// by its sub-job's own state, so a report that repeats one already applied changes only a counter.
func (m *Manager) OnSubJobsReported(ctx context.Context, e *job.Step2SubjobsReported) error {
	consumedAt := m.now()
	return m.apply(ctx, e.JobID, func(ctx context.Context, tx job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		var fx job.Effects
		var absorbed []job.Outcome
		judge := func(index int64, decide func(s *job.SubJob) (job.Effects, job.Outcome)) error {
			s, err := m.subJob(ctx, tx, j, index)
			if err != nil {
				return err
			}
			o := job.Duplicate
			if s != nil {
				var sfx job.Effects
				sfx, o = decide(s)
				if err := m.saveIfApplied(ctx, tx, s, o); err != nil {
					return err
				}
				fx.Merge(sfx)
			}
			if o != job.Applied {
				absorbed = append(absorbed, o)
			}
			return nil
		}
		for _, c := range e.Completed {
			if err := judge(c.Index, func(s *job.SubJob) (job.Effects, job.Outcome) {
				return j.SubJobSucceeded(s, c.Result, m.cfg.Window, consumedAt, now)
			}); err != nil {
				return fx, job.Applied, err
			}
		}
		for _, f := range e.Failed {
			if err := judge(f.Index, func(s *job.SubJob) (job.Effects, job.Outcome) {
				return j.SubJobFailed(s, f.Attempt, f.Error, m.cfg.Window, consumedAt, now)
			}); err != nil {
				return fx, job.Applied, err
			}
		}
		if len(absorbed) > 0 {
			tx.AfterCommit(func() {
				for _, o := range absorbed {
					m.observer.Absorbed(j.ID, o)
				}
			})
		}
		return fx, job.Applied, nil
	})
}

// subJob loads a sub-job named by a report; a report for an index the job does not have is logged and
// dropped (nil, nil): no redelivery can make it valid.
func (m *Manager) subJob(ctx context.Context, tx job.Tx, j *job.Job, index int64) (*job.SubJob, error) {
	s, err := tx.SubJob(ctx, j.ID, index)
	if errors.Is(err, job.ErrNotFound) {
		m.logger.Warn("report for an unknown sub-job ignored", "job", j.ID, "index", index)
		return nil, nil
	}
	return s, err
}

func (m *Manager) saveIfApplied(ctx context.Context, tx job.Tx, s *job.SubJob, o job.Outcome) error {
	if o != job.Applied {
		return nil
	}
	return tx.SaveSubJob(ctx, s)
}

// OnStep2Completed sends step 3 to a worker, once.
func (m *Manager) OnStep2Completed(ctx context.Context, e *job.Step2Completed) error {
	return m.apply(ctx, e.JobID, func(_ context.Context, _ job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		fx, o := j.StartStep3(now)
		return fx, o, nil
	})
}

// OnStep3Completed completes the job.
func (m *Manager) OnStep3Completed(ctx context.Context, e *job.Step3Completed) error {
	return m.apply(ctx, e.JobID, func(_ context.Context, _ job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		fx, o := j.CompleteStep3(e.Output, now)
		return fx, o, nil
	})
}

// OnStepFailed retries step 1 or 3, or fails the job.
func (m *Manager) OnStepFailed(ctx context.Context, e *job.StepFailed) error {
	return m.apply(ctx, e.JobID, func(_ context.Context, _ job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		fx, o := j.StepAttemptFailed(e.Step, e.Attempt, e.Error, now)
		return fx, o, nil
	})
}

// OnJobCancelled only tells the observer: the cancel command already changed the job.
func (m *Manager) OnJobCancelled(_ context.Context, e *job.JobCancelled) error {
	m.observer.JobEnded(e.JobID, job.StateCancelled)
	return nil
}

// OnTick times out attempts that never reported back and starts retries that are due.
func (m *Manager) OnTick(ctx context.Context, e *job.Tick) error {
	return m.apply(ctx, e.JobID, func(ctx context.Context, tx job.Tx, j *job.Job, now time.Time) (job.Effects, job.Outcome, error) {
		fx, _ := j.Tick(now)
		if j.State != job.StateStep2Running {
			return fx, job.Applied, nil
		}
		due, err := tx.DueSubJobs(ctx, j.ID, now, m.cfg.DueBatch)
		if err != nil {
			return fx, job.Applied, fmt.Errorf("tick job %s: %w", j.ID, err)
		}
		for _, s := range due {
			if j.State != job.StateStep2Running {
				break // a time-out failed the job: the rest no longer matters
			}
			var sfx job.Effects
			var so job.Outcome
			if s.State == job.SubJobRunning {
				sfx, so = j.SubJobTimedOut(s, m.cfg.Window, now)
			} else {
				sfx, so = j.RetryDue(s, now)
			}
			if so != job.Applied {
				continue
			}
			if err := tx.SaveSubJob(ctx, s); err != nil {
				return fx, job.Applied, err
			}
			fx.Merge(sfx)
		}
		// A tick is not a report: it is never counted as a duplicate, whatever it found.
		return fx, job.Applied, nil
	})
}
