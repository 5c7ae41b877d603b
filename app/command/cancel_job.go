package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// CancelJob stops a job: nothing more is dispatched and results still in flight are ignored.
type CancelJob struct {
	JobID string
	// Tenant must own the job; empty means the caller may act on any tenant (the local CLI).
	Tenant string
	Reason string
}

// CancelJobHandler handles CancelJob.
type CancelJobHandler struct {
	store job.Store
	now   func() time.Time
}

// NewCancelJobHandler refuses nil dependencies.
func NewCancelJobHandler(store job.Store, now func() time.Time) (CancelJobHandler, error) {
	if store == nil || now == nil {
		return CancelJobHandler{}, errors.New("cancel job: store and clock are required")
	}
	return CancelJobHandler{store: store, now: now}, nil
}

// Handle cancels the job. A job of another tenant is reported as not found, never as forbidden, so
// that ids of other tenants cannot be probed.
func (h CancelJobHandler) Handle(ctx context.Context, cmd CancelJob) error {
	if cmd.Reason == "" {
		cmd.Reason = "cancelled by user"
	}
	return h.store.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		j, err := tx.Job(ctx, cmd.JobID)
		if err != nil {
			return fmt.Errorf("cancel job %s: %w", cmd.JobID, err)
		}
		if cmd.Tenant != "" && j.Tenant != cmd.Tenant {
			return fmt.Errorf("cancel job %s: %w", cmd.JobID, job.ErrNotFound)
		}
		fx, err := j.Cancel(cmd.Reason, h.now())
		if err != nil {
			return err
		}
		if err := tx.SaveJob(ctx, j); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	})
}
