package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ErrInvalidInput: a job input that is not valid JSON, refused before anything is sent.
var ErrInvalidInput = errors.New("job input must be valid JSON")

// Job returns the job with that id, or an error matching ErrJobNotFound when the token's tenant has
// no such job.
func (c *Client) Job(ctx context.Context, id string) (*Job, error) {
	var data struct {
		Job *Job `json:"job"`
	}
	if err := c.do(ctx, "Job", jobQuery, map[string]any{"id": id}, &data); err != nil {
		return nil, err
	}
	if data.Job == nil {
		return nil, fmt.Errorf("job %s: %w", id, ErrJobNotFound)
	}
	return data.Job, nil
}

// mutationPayload is what the job mutations return.
type mutationPayload struct {
	Job        *Job       `json:"job"`
	UserErrors UserErrors `json:"userErrors"`
}

func (p mutationPayload) result(op string) (*Job, error) {
	if len(p.UserErrors) > 0 {
		return p.Job, p.UserErrors
	}
	if p.Job == nil {
		return nil, fmt.Errorf("%s: the server returned no job and no error", op)
	}
	return p.Job, nil
}

// StartJob starts a job of the given type. input is any JSON value (empty for none). A non-empty
// idempotencyKey makes a repeated call return the first job instead of starting another; a non-zero
// deadline is when the job must be finished. Problems with the request come back as UserErrors.
func (c *Client) StartJob(ctx context.Context, jobType string, input json.RawMessage, idempotencyKey string, deadline time.Time) (*Job, error) {
	in := map[string]any{"type": jobType}
	if len(input) > 0 {
		if !json.Valid(input) {
			return nil, ErrInvalidInput
		}
		in["input"] = input
	}
	if idempotencyKey != "" {
		in["idempotencyKey"] = idempotencyKey
	}
	if !deadline.IsZero() {
		in["deadline"] = deadline.Format(time.RFC3339Nano)
	}
	var data struct {
		StartJob mutationPayload `json:"startJob"`
	}
	if err := c.do(ctx, "StartJob", startJobMutation, map[string]any{"input": in}, &data); err != nil {
		return nil, err
	}
	return data.StartJob.result("startJob")
}

// CancelJob cancels a job: nothing more is dispatched and results in flight are ignored. An unknown
// job is an error matching ErrJobNotFound; one that has already ended is a UserErrors with
// ALREADY_FINISHED.
func (c *Client) CancelJob(ctx context.Context, id, reason string) (*Job, error) {
	in := map[string]any{"jobId": id}
	if reason != "" {
		in["reason"] = reason
	}
	var data struct {
		CancelJob mutationPayload `json:"cancelJob"`
	}
	if err := c.do(ctx, "CancelJob", cancelJobMutation, map[string]any{"input": in}, &data); err != nil {
		return nil, err
	}
	return data.CancelJob.result("cancelJob")
}
