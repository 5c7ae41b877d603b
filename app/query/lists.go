package query

import (
	"context"
	"errors"
	"fmt"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
)

// MaxPageSize caps every page a list query returns, whatever the caller asks for.
const MaxPageSize = 500

// ListJobsHandler pages through a tenant's jobs in creation order.
type ListJobsHandler struct{ reader job.Reader }

// NewListJobsHandler refuses a nil reader.
func NewListJobsHandler(reader job.Reader) (ListJobsHandler, error) {
	if reader == nil {
		return ListJobsHandler{}, errors.New("list jobs: reader is required")
	}
	return ListJobsHandler{reader: reader}, nil
}

// Handle returns up to filter.Limit jobs (capped at MaxPageSize) after filter.AfterID. The filter's
// tenant must be set by the caller from who is asking, never from user input.
func (h ListJobsHandler) Handle(ctx context.Context, filter job.ListFilter) ([]*job.Job, error) {
	if filter.Limit <= 0 || filter.Limit > MaxPageSize {
		filter.Limit = MaxPageSize
	}
	jobs, err := h.reader.ListJobs(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// ListSubJobsHandler pages through one job's sub-jobs in index order.
type ListSubJobsHandler struct{ reader job.Reader }

// NewListSubJobsHandler refuses a nil reader.
func NewListSubJobsHandler(reader job.Reader) (ListSubJobsHandler, error) {
	if reader == nil {
		return ListSubJobsHandler{}, errors.New("list sub-jobs: reader is required")
	}
	return ListSubJobsHandler{reader: reader}, nil
}

// ListSubJobs selects sub-jobs of one job.
type ListSubJobs struct {
	JobID string
	// Tenant must own the job; empty means any tenant (the local CLI).
	Tenant string
	// State filters by state; empty matches every state.
	State job.SubJobState
	// AfterIndex pages: only sub-jobs with a greater index (-1 for the first page).
	AfterIndex int64
	Limit      int
}

// Handle returns a page of sub-jobs (inputs and results left out). Another tenant's job is not found.
func (h ListSubJobsHandler) Handle(ctx context.Context, q ListSubJobs) ([]*job.SubJob, error) {
	j, err := h.reader.GetJob(ctx, q.JobID)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", q.JobID, err)
	}
	if q.Tenant != "" && j.Tenant != q.Tenant {
		return nil, fmt.Errorf("job %s: %w", q.JobID, job.ErrNotFound)
	}
	if q.Limit <= 0 || q.Limit > MaxPageSize {
		q.Limit = MaxPageSize
	}
	subs, err := h.reader.ListSubJobs(ctx, q.JobID, q.State, q.AfterIndex, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("list sub-jobs of job %s: %w", q.JobID, err)
	}
	return subs, nil
}

// JobTypesHandler lists the registered job types.
type JobTypesHandler struct{ types *jobtype.Registry }

// NewJobTypesHandler refuses a nil registry.
func NewJobTypesHandler(types *jobtype.Registry) (JobTypesHandler, error) {
	if types == nil {
		return JobTypesHandler{}, errors.New("job types: registry is required")
	}
	return JobTypesHandler{types: types}, nil
}

// Handle returns every registered type, by name.
func (h JobTypesHandler) Handle() []jobtype.Definition {
	names := h.types.Names()
	out := make([]jobtype.Definition, 0, len(names))
	for _, n := range names {
		if d, err := h.types.Get(n); err == nil {
			out = append(out, d)
		}
	}
	return out
}
