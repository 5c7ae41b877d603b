package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/graph/client"
)

// Environment variables that stand in for --server and --token.
const (
	envServer = config.EnvPrefix + "SERVER"
	envToken  = config.EnvPrefix + "TOKEN"
)

// remoteRequestTimeout bounds each request to a server and each websocket handshake, not a whole watch.
const remoteRequestTimeout = 30 * time.Second

// remoteFlags are --server and --token: with a server, a command talks to a remote jobmill over its
// GraphQL API instead of opening the configured store.
type remoteFlags struct {
	server, token string
}

func (r *remoteFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.server, "server", "", "talk to the jobmill server at this URL (e.g. http://127.0.0.1:8080) over its GraphQL API "+
		"instead of opening the store (default $"+envServer+")")
	cmd.Flags().StringVar(&r.token, "token", "", "API token for --server (default $"+envToken+", which keeps it out of process listings)")
}

// client returns a client for the server the flags or the environment name, or nil when the command
// should use the local store.
func (r *remoteFlags) client(cmd *cobra.Command) (*client.Client, error) {
	server, serverSource := r.server, "--server"
	if !cmd.Flags().Changed("server") {
		server, serverSource = os.Getenv(envServer), "$"+envServer
	}
	token := r.token
	if !cmd.Flags().Changed("token") {
		token = os.Getenv(envToken)
	}
	if strings.TrimSpace(server) == "" {
		if cmd.Flags().Changed("token") {
			return nil, fmt.Errorf("--token is for a remote server: add --server URL or set %s", envServer)
		}
		return nil, nil
	}
	c, err := client.New(server, token, &http.Client{Timeout: remoteRequestTimeout})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", serverSource, err)
	}
	return c, nil
}

// remoteError rewords the errors a user can act on; the token itself never appears.
func remoteError(c *client.Client, err error) error {
	switch {
	case errors.Is(err, client.ErrTokenRequired):
		return fmt.Errorf("the server at %s needs an API token: pass --token or set %s (`jobmill token create --tenant NAME` on the server's store makes one)",
			c.Endpoint(), envToken)
	case errors.Is(err, client.ErrUnauthorized):
		return fmt.Errorf("invalid token: the server at %s refused it; check --token or %s", c.Endpoint(), envToken)
	}
	return err
}

// remoteNotFound is the error for a job the server does not know (for this token's tenant).
func remoteNotFound(c *client.Client, id string) error {
	return fmt.Errorf("no job %s on the server at %s (for this token's tenant)", id, c.Endpoint())
}

func submitRemote(cmd *cobra.Command, c *client.Client, jobType, input, key string, wait bool) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	j, err := c.StartJob(ctx, jobType, json.RawMessage(input), key, time.Time{})
	if err != nil {
		return remoteError(c, err)
	}
	fmt.Fprintln(out, j.ID)
	if !wait {
		return nil
	}
	final, err := followRemote(ctx, c, j, out)
	if err != nil {
		return err
	}
	printRemoteSummary(out, final)
	return remoteOutcome(final)
}

func statusRemote(cmd *cobra.Command, c *client.Client, id string, asJSON bool) error {
	j, err := c.Job(cmd.Context(), id)
	if errors.Is(err, client.ErrJobNotFound) {
		return remoteNotFound(c, id)
	}
	if err != nil {
		return remoteError(c, err)
	}
	if asJSON {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(toRemoteStatusJSON(j))
	}
	printRemoteSummary(cmd.OutOrStdout(), j)
	return nil
}

func cancelRemote(cmd *cobra.Command, c *client.Client, id, reason string) error {
	_, err := c.CancelJob(cmd.Context(), id, reason)
	if errors.Is(err, client.ErrJobNotFound) {
		return remoteNotFound(c, id)
	}
	var ue client.UserErrors
	if errors.As(err, &ue) {
		return fmt.Errorf("cannot cancel job %s: %w", id, err)
	}
	if err != nil {
		return remoteError(c, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "job %s cancelled\n", id)
	return nil
}

// watchRemote follows a job of the server until it ends and prints its summary.
func watchRemote(cmd *cobra.Command, c *client.Client, id string) error {
	ctx, out := cmd.Context(), cmd.OutOrStdout()
	j, err := c.Job(ctx, id)
	if errors.Is(err, client.ErrJobNotFound) {
		return remoteNotFound(c, id)
	}
	if err != nil {
		return remoteError(c, err)
	}
	final, err := followRemote(ctx, c, j, out)
	if err != nil {
		return err
	}
	printRemoteSummary(out, final)
	return remoteOutcome(final)
}

// followRemote shows a job's progress through the jobEvents subscription until it ends and returns
// the job as it ended. j is the job as last read.
func followRemote(ctx context.Context, c *client.Client, j *client.Job, out io.Writer) (*client.Job, error) {
	view := newProgressView(out, j.ID)
	show := func(j *client.Job) {
		view.update(job.State(j.State), j.Counts.Succeeded+j.Counts.Failed, j.Counts.Total)
	}
	show(j)
	if j.State.Terminal() {
		view.finish()
		return j, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, errc := c.WatchJob(ctx, j.ID, 0)
	last := j
	for ev := range events {
		ej := ev.Job
		ej.Input = j.Input // events leave the input out
		last = &ej
		show(last)
	}
	view.finish()
	if err := <-errc; err != nil {
		if errors.Is(err, client.ErrJobNotFound) {
			return nil, remoteNotFound(c, j.ID)
		}
		return nil, fmt.Errorf("follow job %s: %w", j.ID, remoteError(c, err))
	}
	if !last.State.Terminal() {
		// The server ended the stream without a final event: read where the job is.
		final, err := c.Job(ctx, j.ID)
		if err != nil {
			return nil, remoteError(c, err)
		}
		if !final.State.Terminal() {
			return nil, fmt.Errorf("the server at %s ended the live view of job %s while it is %s", c.Endpoint(), j.ID, final.State)
		}
		return final, nil
	}
	return last, nil
}

// remoteOutcome is the command's result for a job that ended: nil only when it completed.
func remoteOutcome(j *client.Job) error {
	if j.State == client.StateCompleted {
		return nil
	}
	if j.Error == "" {
		return fmt.Errorf("job %s ended %s", j.ID, j.State)
	}
	return fmt.Errorf("job %s ended %s: %s", j.ID, j.State, j.Error)
}

// printRemoteSummary prints a job read from a server for people, like printSummary.
func printRemoteSummary(out io.Writer, j *client.Job) {
	fmt.Fprintf(out, "job %s (%s): %s\n", j.ID, j.Type, j.State)
	if j.Error != "" {
		fmt.Fprintf(out, "  error: %s\n", j.Error)
	}
	for _, s := range j.Steps {
		fmt.Fprintf(out, "  step %d: %s\n", s.Number, stepTimes(job.StepTimes{StartedAt: s.StartedAt, FinishedAt: s.FinishedAt}))
	}
	n := j.Counts
	fmt.Fprintf(out, "  sub-jobs: %d total, %d succeeded, %d failed", n.Total, n.Succeeded, n.Failed)
	if pending := n.Total - n.Succeeded - n.Failed - n.InFlight; pending > 0 {
		fmt.Fprintf(out, ", %d %s", pending, job.SubJobPending)
	}
	if n.InFlight > 0 {
		fmt.Fprintf(out, ", %d in flight", n.InFlight)
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "  retries: %d, timed out: %d, duplicates absorbed: %d, late reports ignored: %d\n", n.Retries, n.TimedOut, n.Duplicates, n.Late)
	if !j.Deadline.IsZero() {
		fmt.Fprintf(out, "  deadline: %s\n", j.Deadline.Format(time.RFC3339))
	}
	if !j.EndedAt.IsZero() && !j.CreatedAt.IsZero() {
		fmt.Fprintf(out, "  took %s\n", j.EndedAt.Sub(j.CreatedAt).Round(time.Millisecond))
	}
	if len(j.Output) > 0 {
		fmt.Fprintf(out, "  output: %s\n", j.Output)
	}
}

// remoteStatusJSON is the machine-readable status of a job read from a server: statusJSON without the
// tenant (the token's), with the job's seq and deadline.
type remoteStatusJSON struct {
	ID         string           `json:"id"`
	Type       string           `json:"type"`
	State      client.JobState  `json:"state"`
	Error      string           `json:"error,omitempty"`
	Progress   float64          `json:"progress"`
	Seq        int64            `json:"seq"`
	Steps      []stepJSON       `json:"steps"`
	SubJobs    map[string]int64 `json:"subjobs"`
	Retries    int64            `json:"retries"`
	TimedOut   int64            `json:"timed_out"`
	Duplicates int64            `json:"duplicates_absorbed"`
	Late       int64            `json:"late_ignored"`
	CreatedAt  time.Time        `json:"created_at"`
	Deadline   *time.Time       `json:"deadline,omitempty"`
	EndedAt    *time.Time       `json:"ended_at,omitempty"`
	Output     json.RawMessage  `json:"output,omitempty"`
}

func toRemoteStatusJSON(j *client.Job) remoteStatusJSON {
	n := j.Counts
	out := remoteStatusJSON{ID: j.ID, Type: j.Type, State: j.State, Error: j.Error, Progress: j.Progress, Seq: j.Seq,
		SubJobs: map[string]int64{"total": n.Total, "succeeded": n.Succeeded, "failed": n.Failed},
		Retries: n.Retries, TimedOut: n.TimedOut, Duplicates: n.Duplicates, Late: n.Late, CreatedAt: j.CreatedAt,
		Deadline: timePtr(j.Deadline), EndedAt: timePtr(j.EndedAt)}
	if pending := n.Total - n.Succeeded - n.Failed - n.InFlight; pending > 0 {
		out.SubJobs[string(job.SubJobPending)] = pending
	}
	if n.InFlight > 0 {
		out.SubJobs["in_flight"] = n.InFlight
	}
	for _, s := range j.Steps {
		out.Steps = append(out.Steps, stepJSON{Step: s.Number, StartedAt: timePtr(s.StartedAt), FinishedAt: timePtr(s.FinishedAt)})
	}
	if json.Valid(j.Output) {
		out.Output = j.Output
	}
	return out
}
