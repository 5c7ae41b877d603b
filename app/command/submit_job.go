// Package command holds the use cases that change jobs on a user's request.
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
)

// DefaultTenant owns jobs submitted without a tenant (the embedded, single-user mode).
const DefaultTenant = "default"

// SubmitJob starts a job of a registered type.
type SubmitJob struct {
	Tenant string
	Type   string
	// Input is the job's input, JSON.
	Input []byte
	// IdempotencyKey, when set, makes a repeated submission return the first job instead of a new one.
	IdempotencyKey string
	// Deadline is when the submitter needs the job finished; zero for none. It must lie in the future.
	Deadline time.Time
}

// SubmitJobHandler handles SubmitJob.
type SubmitJobHandler struct {
	store job.Store
	types *jobtype.Registry
	newID func() string
	now   func() time.Time
}

// NewSubmitJobHandler refuses nil dependencies.
func NewSubmitJobHandler(store job.Store, types *jobtype.Registry, newID func() string, now func() time.Time) (SubmitJobHandler, error) {
	if store == nil || types == nil || newID == nil || now == nil {
		return SubmitJobHandler{}, errors.New("submit job: store, types, id generator and clock are required")
	}
	return SubmitJobHandler{store: store, types: types, newID: newID, now: now}, nil
}

var (
	// ErrInvalidInput: the job input is not valid JSON.
	ErrInvalidInput = errors.New("job input must be valid JSON")
	// ErrInvalidDeadline: the deadline has already passed.
	ErrInvalidDeadline = errors.New("invalid deadline")
)

// Handle creates the job and its JobStarted event in one transaction and returns the job id. A repeated
// idempotency key returns the existing job's id and no error.
func (h SubmitJobHandler) Handle(ctx context.Context, cmd SubmitJob) (string, error) {
	def, err := h.types.Get(cmd.Type)
	if err != nil {
		return "", err
	}
	if len(cmd.Input) == 0 {
		cmd.Input = []byte("{}")
	}
	if !json.Valid(cmd.Input) {
		return "", fmt.Errorf("%w: %.80q", ErrInvalidInput, cmd.Input)
	}
	if cmd.Tenant == "" {
		cmd.Tenant = DefaultTenant
	}
	now := h.now()
	if !cmd.Deadline.IsZero() && !cmd.Deadline.After(now) {
		return "", fmt.Errorf("%w: %s is not in the future", ErrInvalidDeadline, cmd.Deadline.Format(time.RFC3339))
	}
	j, fx, err := job.New(h.newID(), cmd.Tenant, def.Name, cmd.Input, def.Policy, now)
	if err != nil {
		return "", err
	}
	j.Deadline = cmd.Deadline
	id := j.ID
	err = h.store.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		existing, err := tx.CreateJob(ctx, j, cmd.IdempotencyKey)
		if errors.Is(err, job.ErrDuplicateSubmission) {
			id = existing
			return nil
		}
		if err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	})
	if err != nil {
		return "", fmt.Errorf("submit %s job: %w", cmd.Type, err)
	}
	return id, nil
}
