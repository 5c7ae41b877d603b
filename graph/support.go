package graph

import (
	"context"

	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/graph/model"
)

const (
	// maxNameLength bounds job type names and idempotency keys.
	maxNameLength = 256
	// maxReasonLength bounds a cancellation reason.
	maxReasonLength = 1000
)

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// inputError reports a problem with a field of a mutation's input.
func inputError(code model.UserErrorCode, message, field string) model.UserError {
	return &model.InputError{Code: code, Message: message, Field: []string{"input", field}}
}

// jobError reports a problem with the job a mutation names.
func jobError(code model.UserErrorCode, message, jobID string) model.UserError {
	e := &model.JobError{Code: code, Message: message, Field: []string{"input", "jobId"}}
	if len(jobID) <= maxIDLength {
		e.JobID = &jobID
	}
	return e
}

// jobNotFound is the answer for a job that does not exist and for another tenant's job alike, so that
// ids of other tenants cannot be probed.
func jobNotFound(jobID string) model.UserError {
	return jobError(model.UserErrorCodeNotFound, "job not found", jobID)
}

// loadJob reads a job the request may see, for a mutation's payload.
func (r *Resolver) loadJob(ctx context.Context, id string) (*model.Job, error) {
	tenant, err := r.readTenant(ctx)
	if err != nil {
		return nil, err
	}
	st, err := r.app.Queries.JobStatus.Handle(ctx, id, tenant)
	if err != nil {
		return nil, err
	}
	return toJob(st.Job), nil
}

// onePage fetches up to first items after a keyset position and whether more follow. It asks for
// first+1 items; when that is more than one query may return, a second query of one item answers
// whether more follow.
func onePage[T any, K any](first int, after K, list func(after K, limit int) ([]T, error), key func(T) K) ([]T, bool, error) {
	limit := min(first+1, query.MaxPageSize)
	items, err := list(after, limit)
	if err != nil {
		return nil, false, err
	}
	if len(items) > first {
		return items[:first], true, nil
	}
	if len(items) == first && limit == first {
		more, err := list(key(items[len(items)-1]), 1)
		if err != nil {
			return nil, false, err
		}
		return items, len(more) > 0, nil
	}
	return items, false, nil
}

// forward copies a core stream to a subscription's channel, converting each item (convert may drop
// one), and closes out when the core stream ends, which completes the subscription. Every send is
// guarded by ctx, so the goroutine ends with the subscription, whatever the client does.
func forward[In, Out any](ctx context.Context, in <-chan In, out chan<- Out, convert func(In) (Out, bool)) {
	defer close(out)
	for {
		select {
		case <-ctx.Done():
			return
		case v, ok := <-in:
			if !ok {
				return
			}
			o, keep := convert(v)
			if !keep {
				continue
			}
			select {
			case out <- o:
			case <-ctx.Done():
				return
			}
		}
	}
}
