package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
	"github.com/jobmill/jobmill/service"
)

// statusDetail is what the projections add to a job's status: statistics and the latest events of its
// timeline. Either is nil while its consumer has not seen the job (the projector runs behind the manager).
type statusDetail struct {
	Stats    *stats.Stats     `json:"stats,omitempty"`
	Timeline []timeline.Entry `json:"timeline,omitempty"`
}

func readStatusDetail(ctx context.Context, svc *service.Service, id string, lastEvents int) (statusDetail, error) {
	var d statusDetail
	st, err := svc.Read.Stats.JobStats(ctx, id, "")
	switch {
	case err == nil:
		d.Stats = &st
	case !errors.Is(err, job.ErrNotFound):
		return d, fmt.Errorf("statistics of job %s: %w", id, err)
	}
	sum, err := svc.Read.Timeline.Job(ctx, id, "")
	switch {
	case errors.Is(err, job.ErrNotFound):
		return d, nil
	case err != nil:
		return d, fmt.Errorf("timeline of job %s: %w", id, err)
	}
	after := max(sum.Events-int64(lastEvents), 0)
	if d.Timeline, err = svc.Read.Timeline.Timeline(ctx, id, "", after, lastEvents); err != nil {
		return d, fmt.Errorf("timeline of job %s: %w", id, err)
	}
	return d, nil
}

func printDetail(out io.Writer, d statusDetail) {
	if s := d.Stats; s != nil {
		fmt.Fprintf(out, "  sub-job durations: p50 %s, p95 %s, p99 %s over %d; attempts %d\n",
			s.SubJobs.P50.Round(time.Microsecond), s.SubJobs.P95.Round(time.Microsecond), s.SubJobs.P99.Round(time.Microsecond), s.SubJobs.Count, s.Attempts)
		var peak int64
		for _, b := range s.Throughput {
			peak = max(peak, b.Completed)
		}
		if peak > 0 && s.BucketWidth > 0 {
			fmt.Fprintf(out, "  throughput: peak %.0f sub-jobs/s (%s buckets)\n", float64(peak)/s.BucketWidth.Seconds(), s.BucketWidth)
		}
		for i, e := range s.TopErrors {
			if i == 3 {
				break
			}
			fmt.Fprintf(out, "  failures: %d× %s\n", e.Count, e.Error)
		}
	}
	if len(d.Timeline) > 0 {
		fmt.Fprintf(out, "  latest events:\n")
		for _, e := range d.Timeline {
			line := fmt.Sprintf("    #%d %s %s", e.Pos, e.At.Format("15:04:05.000"), e.Kind)
			if e.Kind == "Step2SubjobCompleted" || e.Kind == "Step2SubjobFailed" || (e.Kind == "AttemptTimedOut" && e.Step == 2) {
				line += fmt.Sprintf(" sub-job %d attempt %d", e.Index, e.Attempt)
			}
			if e.Detail != "" {
				line += ": " + e.Detail
			}
			fmt.Fprintln(out, line)
		}
	}
}
