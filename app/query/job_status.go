// Package query holds the read-side use cases.
package query

import (
	"context"
	"errors"
	"fmt"

	"github.com/jobmill/jobmill/app/job"
)

// JobStatus is the detailed status of one job at a moment.
type JobStatus struct {
	Job *job.Job
	// SubJobs counts sub-jobs by state.
	SubJobs map[job.SubJobState]int64
}

// JobStatusHandler reads job status.
type JobStatusHandler struct{ reader job.Reader }

// NewJobStatusHandler refuses a nil reader.
func NewJobStatusHandler(reader job.Reader) (JobStatusHandler, error) {
	if reader == nil {
		return JobStatusHandler{}, errors.New("job status: reader is required")
	}
	return JobStatusHandler{reader: reader}, nil
}

// Handle returns the status of a job. With a tenant set, another tenant's job is not found.
func (h JobStatusHandler) Handle(ctx context.Context, jobID, tenant string) (JobStatus, error) {
	j, err := h.reader.GetJob(ctx, jobID)
	if err != nil {
		return JobStatus{}, fmt.Errorf("job %s: %w", jobID, err)
	}
	if tenant != "" && j.Tenant != tenant {
		return JobStatus{}, fmt.Errorf("job %s: %w", jobID, job.ErrNotFound)
	}
	counts, err := h.reader.CountSubJobs(ctx, jobID)
	if err != nil {
		return JobStatus{}, fmt.Errorf("count sub-jobs of job %s: %w", jobID, err)
	}
	return JobStatus{Job: j, SubJobs: counts}, nil
}
