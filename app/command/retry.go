package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// MaxRetriedPerRequest bounds how many failed sub-jobs one RetryFailedSubJobs request retries, so that a
// request is one transaction of bounded size; repeat the request for more.
const MaxRetriedPerRequest = 10_000

// RetryFailedSubJobs gives every sub-job of a running step 2 that failed for good one more attempt.
type RetryFailedSubJobs struct {
	JobID string
	// Tenant must own the job; empty means any tenant (the local CLI).
	Tenant string
}

// RetryFailedSubJobsHandler handles RetryFailedSubJobs.
type RetryFailedSubJobsHandler struct {
	store job.Store
	now   func() time.Time
}

// NewRetryFailedSubJobsHandler refuses nil dependencies.
func NewRetryFailedSubJobsHandler(store job.Store, now func() time.Time) (RetryFailedSubJobsHandler, error) {
	if store == nil || now == nil {
		return RetryFailedSubJobsHandler{}, errors.New("retry failed sub-jobs: store and clock are required")
	}
	return RetryFailedSubJobsHandler{store: store, now: now}, nil
}

// Handle retries the failed sub-jobs and returns how many it retried (0 when none had failed).
func (h RetryFailedSubJobsHandler) Handle(ctx context.Context, cmd RetryFailedSubJobs) (int, error) {
	// The failed indexes are read before the transaction; inside it each sub-job is loaded again and
	// the domain re-checks its state, so a sub-job retried concurrently is skipped, not retried twice.
	j, err := h.store.GetJob(ctx, cmd.JobID)
	if err != nil {
		return 0, fmt.Errorf("retry failed sub-jobs of job %s: %w", cmd.JobID, err)
	}
	if cmd.Tenant != "" && j.Tenant != cmd.Tenant {
		return 0, fmt.Errorf("retry failed sub-jobs of job %s: %w", cmd.JobID, job.ErrNotFound)
	}
	if j.State != job.StateStep2Running {
		return 0, fmt.Errorf("retry failed sub-jobs of job %s: %w (state %s)", cmd.JobID, job.ErrNotRetryable, j.State)
	}
	var indexes []int64
	after := int64(-1)
	for len(indexes) < MaxRetriedPerRequest {
		page, err := h.store.ListSubJobs(ctx, cmd.JobID, job.SubJobFailed, after, min(1000, MaxRetriedPerRequest-len(indexes)))
		if err != nil {
			return 0, fmt.Errorf("list failed sub-jobs of job %s: %w", cmd.JobID, err)
		}
		for _, s := range page {
			indexes = append(indexes, s.Index)
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].Index
	}
	if len(indexes) == 0 {
		return 0, nil
	}
	retried := 0
	err = h.store.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		retried = 0
		j, err := tx.Job(ctx, cmd.JobID)
		if err != nil {
			return err
		}
		now := h.now()
		var fx job.Effects
		for _, idx := range indexes {
			s, err := tx.SubJob(ctx, cmd.JobID, idx)
			if err != nil {
				return err
			}
			run, err := j.RetryFailedSubJob(s, now)
			if errors.Is(err, job.ErrNotRetryable) && j.State == job.StateStep2Running {
				continue // retried or changed since it was listed
			}
			if err != nil {
				return err
			}
			if err := tx.SaveSubJob(ctx, s); err != nil {
				return err
			}
			fx.Commands = append(fx.Commands, run)
			retried++
		}
		if err := tx.SaveJob(ctx, j); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	})
	if err != nil {
		return 0, fmt.Errorf("retry failed sub-jobs of job %s: %w", cmd.JobID, err)
	}
	return retried, nil
}
