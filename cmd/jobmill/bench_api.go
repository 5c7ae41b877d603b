package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/graph/client"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

type benchAPIResult struct {
	Subscribers int `json:"subscribers"`
	Jobs        int `json:"jobs"`
	// ServerRSSMBIdle is the API process's resident memory with the jobs running and no subscriber;
	// ServerRSSMBPeak the most it used while the subscribers followed the jobs.
	ServerRSSMBIdle float64 `json:"server_rss_mb_idle"`
	ServerRSSMBPeak float64 `json:"server_rss_mb_peak"`
	KBPerSubscriber float64 `json:"kb_per_subscriber"`
	// State changes (STEP_STARTED, COMPLETED): from the job's updatedAt, set in the transaction that
	// committed the change, to the client's receipt.
	StateChanges    int     `json:"state_changes"`
	StateDelayMsP50 float64 `json:"state_delay_ms_p50"`
	StateDelayMsP99 float64 `json:"state_delay_ms_p99"`
	// Progress updates: the same delay, including the coalescing interval (at most 4 updates/s per job).
	ProgressUpdates    int     `json:"progress_updates"`
	ProgressDelayMsP50 float64 `json:"progress_delay_ms_p50"`
	ProgressDelayMsP99 float64 `json:"progress_delay_ms_p99"`
	// CompletedStreams counts subscriptions whose last event showed the job COMPLETED.
	CompletedStreams int     `json:"completed_streams"`
	WallS            float64 `json:"wall_s"`
}

func newBenchAPICommand() *cobra.Command {
	var subscribers, jobs int
	var subjobs int64
	var durationMS int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "api [--subscribers N] [--jobs J] [--json]",
		Short: "Measure live subscriptions: N websocket subscribers following J jobs on one API process",
		Long: `Start 'jobmill serve' as a separate process on a fresh SQLite file (auth required, a token created
for the run), submit J synthetic jobs through the GraphQL API, then open N graphql-transport-ws
subscriptions to jobEvents spread over the jobs. Reports the API process's memory and the delay from
each change's commit to its delivery.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subscribers < 1 || jobs < 1 || subjobs < 1 {
				return errors.New("--subscribers, --jobs and --subjobs must be at least 1")
			}
			res, err := benchAPI(cmd.Context(), subscribers, jobs, subjobs, durationMS)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "subscribers × jobs   %d × %d (%d streams completed)\n", res.Subscribers, res.Jobs, res.CompletedStreams)
			fmt.Fprintf(out, "API process RSS      %.0f MB idle, %.0f MB peak (%.0f KB per subscriber)\n", res.ServerRSSMBIdle, res.ServerRSSMBPeak, res.KBPerSubscriber)
			fmt.Fprintf(out, "state changes        %d, commit → delivery p50 %.1f ms, p99 %.1f ms\n", res.StateChanges, res.StateDelayMsP50, res.StateDelayMsP99)
			fmt.Fprintf(out, "progress updates     %d, commit → delivery p50 %.1f ms, p99 %.1f ms (coalesced)\n", res.ProgressUpdates, res.ProgressDelayMsP50, res.ProgressDelayMsP99)
			return nil
		},
	}
	cmd.Flags().IntVar(&subscribers, "subscribers", 1000, "websocket subscriptions, spread evenly over the jobs")
	cmd.Flags().IntVar(&jobs, "jobs", 100, "jobs followed")
	cmd.Flags().Int64Var(&subjobs, "subjobs", 500, "sub-jobs per job")
	cmd.Flags().IntVar(&durationMS, "duration-ms", 10, "duration of each sub-job, so that jobs outlast the subscribers' connecting")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func benchAPI(ctx context.Context, subscribers, jobs int, subjobs int64, durationMS int) (*benchAPIResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "jobmill-bench-api-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	dbPath := filepath.Join(dir, "bench.db")

	var tokenOut bytes.Buffer
	create := exec.CommandContext(ctx, self, "token", "create", "--tenant", "bench", "--sqlite-path", dbPath, "--log-level", "warn")
	create.Stdout, create.Stderr = &tokenOut, os.Stderr
	if err := create.Run(); err != nil {
		return nil, fmt.Errorf("create a token: %w", err)
	}
	token := strings.TrimSpace(tokenOut.String())

	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var serverLog bytes.Buffer
	server := exec.Command(self, "serve", "--sqlite-path", dbPath, "--listen", addr, "--log-level", "warn",
		"--outbox-dir", filepath.Join(dir, "outbox"))
	// One token opens every subscription: lift the per-token rate limit for the run.
	server.Env = append(os.Environ(), "JOBMILL_API_RATE_LIMIT=1000000")
	server.Stdout, server.Stderr = &serverLog, &serverLog
	if err := server.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = server.Process.Signal(syscall.SIGTERM)
		_ = server.Wait()
	}()
	base := "http://" + addr
	if err := waitReady(ctx, base+"/readyz", 30*time.Second); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, serverLog.String())
	}

	c, err := client.New(base, token, &http.Client{Timeout: 30 * time.Second}, client.WithReconnect(0, 0))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	input, _ := json.Marshal(synthetic.Input{SubJobs: subjobs, DurationMS: durationMS})
	ids := make([]string, jobs)
	for i := range ids {
		j, err := c.StartJob(ctx, synthetic.Name, input, "", time.Time{})
		if err != nil {
			return nil, fmt.Errorf("start job %d: %w", i+1, err)
		}
		ids[i] = j.ID
	}
	time.Sleep(time.Second) // let the jobs' own memory settle before the baseline
	res := &benchAPIResult{Subscribers: subscribers, Jobs: jobs, ServerRSSMBIdle: rssMB(server.Process.Pid, "VmRSS:")}
	stopSampling := sampleRSS(server.Process.Pid, &res.ServerRSSMBPeak)

	var mu sync.Mutex
	var stateDelays, progressDelays []time.Duration
	var streamErrs []error
	var wg sync.WaitGroup
	for i := range subscribers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			events, errc := c.WatchJob(ctx, ids[i%jobs], 0)
			var state, progress []time.Duration
			completed := false
			for ev := range events {
				delay := time.Since(ev.Job.UpdatedAt)
				switch ev.Kind {
				case client.EventSnapshot: // a read on connecting, not the delivery of a change
				case client.EventProgress:
					progress = append(progress, delay)
				default:
					state = append(state, delay)
				}
				completed = ev.Job.State == client.StateCompleted
			}
			err := <-errc
			mu.Lock()
			defer mu.Unlock()
			stateDelays = append(stateDelays, state...)
			progressDelays = append(progressDelays, progress...)
			if err != nil {
				streamErrs = append(streamErrs, err)
			}
			if completed {
				res.CompletedStreams++
			}
		}()
	}
	wg.Wait()
	stopSampling()
	res.WallS = time.Since(start).Seconds()
	res.KBPerSubscriber = (res.ServerRSSMBPeak - res.ServerRSSMBIdle) * 1024 / float64(subscribers)
	if len(streamErrs) > 0 {
		return nil, fmt.Errorf("%d of %d subscriptions failed; first: %w", len(streamErrs), subscribers, streamErrs[0])
	}
	if res.CompletedStreams != subscribers {
		return nil, fmt.Errorf("%d of %d subscriptions ended without seeing their job COMPLETED", subscribers-res.CompletedStreams, subscribers)
	}
	res.StateChanges, res.ProgressUpdates = len(stateDelays), len(progressDelays)
	res.StateDelayMsP50, res.StateDelayMsP99 = quantileMS(stateDelays, 0.5), quantileMS(stateDelays, 0.99)
	res.ProgressDelayMsP50, res.ProgressDelayMsP99 = quantileMS(progressDelays, 0.5), quantileMS(progressDelays, 0.99)
	return res, nil
}

func quantileMS(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ms(ds[min(len(ds)-1, int(q*float64(len(ds))))])
}

// sampleRSS records the largest VmRSS of pid into peak until the returned stop is called.
func sampleRSS(pid int, peak *float64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			*peak = max(*peak, rssMB(pid, "VmRSS:"))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// freeAddr finds a loopback port nobody listens on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitReady(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the API process was not ready at %s within %s", url, timeout)
}

// rssMB reads a memory line (VmRSS, VmHWM) of another process from /proc; 0 where there is none.
func rssMB(pid int, field string) float64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
