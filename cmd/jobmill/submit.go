package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/service"
)

func newSubmitCommand() *cobra.Command {
	var jobType, input, tenant, key string
	var wait bool
	var remote remoteFlags
	cmd := &cobra.Command{
		Use:   "submit --type TYPE --input JSON [--wait]",
		Short: "Submit a job",
		Example: `  jobmill submit --type invoices --input '{"account_manager":"alice","customers":1000}' --wait
  jobmill submit --type synthetic --input '{"subjobs":10000}'
  jobmill submit --server https://jobs.example.com --type synthetic --input '{"subjobs":100}' --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := remote.client(cmd)
			if err != nil {
				return err
			}
			if c != nil {
				if cmd.Flags().Changed("tenant") {
					return errors.New("--tenant does not apply with --server: the token decides the tenant")
				}
				return submitRemote(cmd, c, jobType, input, key, wait)
			}
			return withService(cmd, func(_ config.Config, svc *service.Service) error {
				return submit(cmd, svc, command.SubmitJob{Tenant: tenant, Type: jobType, Input: []byte(input), IdempotencyKey: key}, wait)
			})
		},
	}
	cmd.Flags().StringVar(&jobType, "type", "", "job type (invoices, synthetic, or one your program registers)")
	cmd.Flags().StringVar(&input, "input", "{}", "job input, JSON")
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant that owns the job (default \"default\")")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "submitting again with the same key returns the first job")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends")
	remote.register(cmd)
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

// submit submits a job and, with wait, follows it to the end.
func submit(cmd *cobra.Command, svc *service.Service, sj command.SubmitJob, wait bool) error {
	id, err := svc.App.Commands.SubmitJob.Handle(cmd.Context(), sj)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), id)
	if !wait {
		return nil
	}
	st, err := waitForJob(cmd.Context(), svc, id, cmd.OutOrStdout(), true)
	if err != nil {
		return err
	}
	printSummary(cmd.OutOrStdout(), st)
	if st.Job.State != job.StateCompleted {
		return fmt.Errorf("job %s ended %s: %s", id, st.Job.State, st.Job.Error)
	}
	return nil
}

// waitForJob follows a job until it ends: a live progress bar on a terminal, plain lines otherwise.
func waitForJob(ctx context.Context, svc *service.Service, id string, out io.Writer, hintIfIdle bool) (query.JobStatus, error) {
	view := newProgressView(out, id)
	started := time.Now()
	hinted := false
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		st, err := svc.App.Queries.JobStatus.Handle(ctx, id, "")
		if err != nil {
			return query.JobStatus{}, err
		}
		j := st.Job
		view.update(j.State, j.Succeeded+j.Failed, j.Total)
		if j.State.Terminal() {
			view.finish()
			return st, nil
		}
		if hintIfIdle && !hinted && j.State == job.StatePending && time.Since(started) > 3*time.Second {
			fmt.Fprintln(os.Stderr, "jobmill: the job has not started yet; is `jobmill serve` running on the same data file?")
			hinted = true
		}
		select {
		case <-ctx.Done():
			return query.JobStatus{}, ctx.Err()
		case <-tk.C:
		}
	}
}

// progressView shows how far a job is: a live progress bar on a terminal, plain lines otherwise
// (while step 2 runs, at most one a second after the first).
type progressView struct {
	out         io.Writer
	id          string
	interactive bool
	bar         *progressbar.ProgressBar
	lastLine    string
	lastState   job.State
	lastPrint   time.Time
}

func newProgressView(out io.Writer, id string) *progressView {
	interactive := false
	if f, ok := out.(*os.File); ok {
		interactive = term.IsTerminal(int(f.Fd()))
	}
	return &progressView{out: out, id: id, interactive: interactive}
}

// update shows the job in state with done of total sub-jobs finished.
func (v *progressView) update(state job.State, done, total int64) {
	switch {
	case v.interactive && total > 0:
		if v.bar == nil {
			v.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(v.out), progressbar.OptionSetDescription("sub-jobs"),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("sub-jobs"),
				progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		_ = v.bar.Set64(done)
	default:
		line := fmt.Sprintf("job %s: %s, %d/%d sub-jobs done", v.id, state, done, total)
		if line != v.lastLine && (time.Since(v.lastPrint) >= time.Second || state != job.StateStep2Running || state != v.lastState) {
			fmt.Fprintln(v.out, line)
			v.lastLine, v.lastState, v.lastPrint = line, state, time.Now()
		}
	}
}

// finish completes the progress bar, if one is shown.
func (v *progressView) finish() {
	if v.bar != nil {
		_ = v.bar.Finish()
	}
}

// printSummary prints the detailed status of a job for people.
func printSummary(out io.Writer, st query.JobStatus) {
	j := st.Job
	fmt.Fprintf(out, "job %s (%s, tenant %s): %s\n", j.ID, j.Type, j.Tenant, j.State)
	if j.Error != "" {
		fmt.Fprintf(out, "  error: %s\n", j.Error)
	}
	for i, s := range j.Steps {
		fmt.Fprintf(out, "  step %d: %s\n", i+1, stepTimes(s))
	}
	fmt.Fprintf(out, "  sub-jobs: %d total, %d succeeded, %d failed", j.Total, j.Succeeded, j.Failed)
	for _, state := range []job.SubJobState{job.SubJobPending, job.SubJobRunning, job.SubJobRetryWait} {
		if n := st.SubJobs[state]; n > 0 {
			fmt.Fprintf(out, ", %d %s", n, state)
		}
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "  retries: %d, timed out: %d, duplicates absorbed: %d, late reports ignored: %d\n", j.Retries, j.TimedOut, j.Duplicates, j.Late)
	if !j.EndedAt.IsZero() {
		fmt.Fprintf(out, "  took %s\n", j.EndedAt.Sub(j.CreatedAt).Round(time.Millisecond))
	}
	if len(j.Output) > 0 {
		fmt.Fprintf(out, "  output: %s\n", j.Output)
	}
}

func stepTimes(s job.StepTimes) string {
	switch {
	case s.StartedAt.IsZero():
		return "not started"
	case s.FinishedAt.IsZero():
		return "started " + s.StartedAt.Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%s → %s (%s)", s.StartedAt.Format("15:04:05.000"), s.FinishedAt.Format("15:04:05.000"), s.FinishedAt.Sub(s.StartedAt).Round(time.Millisecond))
}

// statusJSON is the machine-readable status.
type statusJSON struct {
	ID         string           `json:"id"`
	Tenant     string           `json:"tenant"`
	Type       string           `json:"type"`
	State      job.State        `json:"state"`
	Error      string           `json:"error,omitempty"`
	Progress   float64          `json:"progress"`
	Steps      []stepJSON       `json:"steps"`
	SubJobs    map[string]int64 `json:"subjobs"`
	Retries    int64            `json:"retries"`
	TimedOut   int64            `json:"timed_out"`
	Duplicates int64            `json:"duplicates_absorbed"`
	Late       int64            `json:"late_ignored"`
	CreatedAt  time.Time        `json:"created_at"`
	EndedAt    *time.Time       `json:"ended_at,omitempty"`
	Output     json.RawMessage  `json:"output,omitempty"`
	// Stats and Timeline come from the projections (local status only; absent until they saw the job).
	Stats    *statsView  `json:"stats,omitempty"`
	Timeline []entryView `json:"timeline,omitempty"`
}

type stepJSON struct {
	Step       int        `json:"step"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

func toStatusJSON(st query.JobStatus) statusJSON {
	j := st.Job
	out := statusJSON{ID: j.ID, Tenant: j.Tenant, Type: j.Type, State: j.State, Error: j.Error, Progress: j.Progress(),
		SubJobs: map[string]int64{"total": j.Total, "succeeded": j.Succeeded, "failed": j.Failed},
		Retries: j.Retries, TimedOut: j.TimedOut, Duplicates: j.Duplicates, Late: j.Late, CreatedAt: j.CreatedAt}
	for state, n := range st.SubJobs {
		if !state.Finished() {
			out.SubJobs[string(state)] = n
		}
	}
	for i, s := range j.Steps {
		out.Steps = append(out.Steps, stepJSON{Step: i + 1, StartedAt: timePtr(s.StartedAt), FinishedAt: timePtr(s.FinishedAt)})
	}
	out.EndedAt = timePtr(j.EndedAt)
	if json.Valid(j.Output) {
		out.Output = j.Output
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
