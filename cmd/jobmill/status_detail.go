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
	Stats    *stats.Stats
	Timeline []timeline.Entry
}

type durationsView struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_s"`
	P50   float64 `json:"p50_s"`
	P95   float64 `json:"p95_s"`
	P99   float64 `json:"p99_s"`
}

type bucketView struct {
	Start     time.Time `json:"start"`
	Completed int64     `json:"completed"`
}

type errorCountView struct {
	Error string `json:"error"`
	Count int64  `json:"count"`
}

// statsView is the statistics in the snake_case, seconds-based shape of the rest of `status --json`.
type statsView struct {
	Steps           [3]durationsView `json:"steps"`
	SubJobDurations durationsView    `json:"subjob_durations"`
	Throughput      []bucketView     `json:"throughput"`
	BucketSeconds   float64          `json:"bucket_s"`
	Attempts        int64            `json:"attempts"`
	Retries         int64            `json:"retries"`
	TimedOut        int64            `json:"timed_out"`
	Duplicates      int64            `json:"duplicates"`
	Late            int64            `json:"late"`
	TopErrors       []errorCountView `json:"top_errors"`
}

type entryView struct {
	Pos      int64     `json:"pos"`
	Kind     string    `json:"kind"`
	Seq      int64     `json:"seq,omitempty"`
	At       time.Time `json:"at"`
	Step     int       `json:"step,omitempty"`
	Index    *int64    `json:"subjob,omitempty"`
	Attempt  int       `json:"attempt,omitempty"`
	Duration float64   `json:"duration_s,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

// views converts the detail for `status --json`.
func (d statusDetail) views() (*statsView, []entryView) {
	conv := func(d stats.Durations) durationsView {
		return durationsView{d.Count, d.Mean.Seconds(), d.P50.Seconds(), d.P95.Seconds(), d.P99.Seconds()}
	}
	var sv *statsView
	if s := d.Stats; s != nil {
		sv = &statsView{SubJobDurations: conv(s.SubJobs), BucketSeconds: s.BucketWidth.Seconds(), Attempts: s.Attempts,
			Retries: s.Retries, TimedOut: s.TimedOut, Duplicates: s.Duplicates, Late: s.Late,
			Throughput: []bucketView{}, TopErrors: []errorCountView{}}
		for i, st := range s.Steps {
			sv.Steps[i] = conv(st)
		}
		for _, b := range s.Throughput {
			sv.Throughput = append(sv.Throughput, bucketView{b.Start, b.Completed})
		}
		for _, e := range s.TopErrors {
			sv.TopErrors = append(sv.TopErrors, errorCountView{e.Error, e.Count})
		}
	}
	var entries []entryView
	for _, e := range d.Timeline {
		ev := entryView{Pos: e.Pos, Kind: e.Kind, Seq: e.Seq, At: e.At, Step: e.Step, Attempt: e.Attempt,
			Duration: e.Duration.Seconds(), Detail: e.Detail}
		if e.Index >= 0 {
			ev.Index = &e.Index
		}
		entries = append(entries, ev)
	}
	return sv, entries
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
