package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
	"github.com/jobmill/jobmill/service"
)

// benchResult is the one JSON object `jobmill bench --json` prints.
type benchResult struct {
	Transport      string  `json:"transport"`
	SubJobs        int64   `json:"subjobs"`
	Jobs           int     `json:"jobs"`
	Workers        int     `json:"workers"`
	WallS          float64 `json:"wall_s"`
	SubJobsPerSec  float64 `json:"subjobs_per_sec"`
	FanInMsP50     float64 `json:"fanin_ms_p50"`
	FanInMsP99     float64 `json:"fanin_ms_p99"`
	PeakRSSMB      float64 `json:"peak_rss_mb"`
	RawMsgsPerSec  float64 `json:"raw_msgs_per_sec"`
	RawMessages    int     `json:"raw_messages"`
	CompletedJobs  int     `json:"completed_jobs"`
	DuplicatesSeen int64   `json:"duplicates_absorbed"`
	// Projections says whether the projector role ran (statistics, status view, notifier). With it,
	// ProjectedS is from the first submit until every projection had read the whole log.
	Projections bool    `json:"projections"`
	ProjectedS  float64 `json:"projections_caught_up_s,omitempty"`
}

func newBenchCommand() *cobra.Command {
	var subjobs int64
	var jobs, rawN int
	var asJSON, projections bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "bench [--subjobs N] [--jobs J] [--workers W] [--json]",
		Short: "Measure the engine: no-op synthetic jobs from submit to JobCompleted, beside the transport's raw rate",
		Long: `Run the engine in this process on a fresh database (a new SQLite file unless --sqlite-path is
given, a new PostgreSQL schema or MySQL database, dropped afterwards), measure the transport's raw
publish+consume rate, then submit J synthetic jobs of N no-op sub-jobs in total and time them from the
first submit to the last JobCompleted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if jobs < 1 || subjobs < 0 {
				return fmt.Errorf("--jobs must be at least 1 and --subjobs not negative")
			}
			if !cmd.Flags().Changed("sqlite-path") && os.Getenv("JOBMILL_SQLITE_PATH") == "" {
				dir, err := os.MkdirTemp("", "jobmill-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				cfg.SQLite.Path = filepath.Join(dir, "bench.db")
			}
			dropScratch, err := useScratchDatabases(cmd.Context(), &cfg)
			defer dropScratch()
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("listen") {
				cfg.Listen = "127.0.0.1:0"
			}
			if !projections {
				cfg.Roles = slices.DeleteFunc(slices.Clone(cfg.Roles), func(r string) bool { return r == config.RoleProjector })
			}
			quietByDefault(cmd, &cfg)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			svc, wait, err := startService(ctx, cfg)
			if err != nil {
				return err
			}
			defer svc.Close()
			runErr := make(chan error, 1)
			go func() { runErr <- wait() }()
			if rawN == 0 {
				rawN = int(min(max(subjobs, 1000), 50_000))
			}
			raw, err := svc.RawThroughput(ctx, rawN)
			if err != nil {
				return fmt.Errorf("measure raw transport rate: %w", err)
			}

			warnLeftovers(ctx, svc, cmd.ErrOrStderr())

			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			perJob := subjobs / int64(jobs)
			start := time.Now()
			ids := make([]string, jobs)
			for i := range ids {
				n := perJob
				if i == 0 {
					n += subjobs % int64(jobs)
				}
				input, _ := json.Marshal(synthetic.Input{SubJobs: n})
				if ids[i], err = svc.App.Commands.SubmitJob.Handle(ctx, command.SubmitJob{Type: synthetic.Name, Input: input}); err != nil {
					return err
				}
			}
			completed := 0
			for _, id := range ids {
				select {
				case st := <-svc.Recorder.Ended(id):
					if st == job.StateCompleted {
						completed++
					}
				case err := <-runErr:
					return fmt.Errorf("engine stopped during the benchmark: %v", err)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			wall := time.Since(start)
			var projected time.Duration
			if cfg.HasRole(config.RoleProjector) {
				if err := waitProjectionsCaughtUp(ctx, svc); err != nil {
					return err
				}
				projected = time.Since(start)
			}
			dups, _ := svc.Recorder.AbsorbedCounts()
			res := benchResult{
				Transport: svc.TransportName(), SubJobs: subjobs, Jobs: jobs, Workers: cfg.Workers,
				WallS: wall.Seconds(), SubJobsPerSec: float64(subjobs) / wall.Seconds(),
				FanInMsP50: ms(svc.Recorder.FanInQuantile(0.5)), FanInMsP99: ms(svc.Recorder.FanInQuantile(0.99)),
				PeakRSSMB: peakRSSMB(), RawMsgsPerSec: raw, RawMessages: rawN, CompletedJobs: completed, DuplicatesSeen: dups,
				Projections: cfg.HasRole(config.RoleProjector), ProjectedS: projected.Seconds(),
			}
			cancel()
			_ = wait()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "transport           %s (raw ceiling %.0f msgs/s over %d messages)\n", res.Transport, res.RawMsgsPerSec, rawN)
			fmt.Fprintf(out, "jobs × sub-jobs      %d × %d, %d workers\n", jobs, perJob, cfg.Workers)
			fmt.Fprintf(out, "wall (submit → last JobCompleted)  %.3f s\n", res.WallS)
			fmt.Fprintf(out, "throughput          %.0f sub-jobs/s\n", res.SubJobsPerSec)
			fmt.Fprintf(out, "fan-in p50 / p99    %.2f ms / %.2f ms\n", res.FanInMsP50, res.FanInMsP99)
			fmt.Fprintf(out, "peak RSS            %.0f MB\n", res.PeakRSSMB)
			if res.Projections {
				fmt.Fprintf(out, "projections caught up  %.3f s after the first submit\n", res.ProjectedS)
			}
			if completed != jobs {
				return fmt.Errorf("%d of %d jobs did not complete", jobs-completed, jobs)
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&subjobs, "subjobs", 10_000, "sub-jobs in total, spread over the jobs")
	cmd.Flags().IntVar(&jobs, "jobs", 1, "jobs submitted at once")
	cmd.Flags().IntVar(&rawN, "raw-messages", 0, "messages for the raw transport measurement (default: the sub-job count, 1,000–50,000)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the measured run to this file")
	cmd.Flags().BoolVar(&projections, "projections", true, "run the projector role (statistics, status view, notifier) during the run")
	cmd.AddCommand(newBenchAPICommand())
	return cmd
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// peakRSSMB is this process's peak resident set size (VmHWM); 0 where there is no /proc.
func peakRSSMB() float64 { return rssMB(os.Getpid(), "VmHWM:") }

// warnLeftovers says when the event log holds events that earlier runs left unread by a consumer group
// of this one. The scratch schema isolates SQL backends, but a broker's topics and queues outlive a run,
// and a consumer group new to a Kafka topic starts from its oldest event: the run would replay them all
// and its figures would say nothing about the engine.
func warnLeftovers(ctx context.Context, svc *service.Service, out io.Writer) {
	groups := []string{messaging.ManagerGroup}
	for _, p := range svc.App.Projections {
		groups = append(groups, p.Name())
	}
	for _, g := range groups {
		if lag, err := svc.ConsumerLag(ctx, g); err == nil && lag > 0 {
			fmt.Fprintf(out, "warning: consumer group %q has %d events of earlier runs to read first; the figures include replaying them (use a fresh broker, e.g. a new `jobmill dev kafka`)\n", g, lag)
		}
	}
}

// waitProjectionsCaughtUp waits until every projection's consumer group has read the whole log.
func waitProjectionsCaughtUp(ctx context.Context, svc *service.Service) error {
	for {
		behind := false
		for _, p := range svc.App.Projections {
			lag, err := svc.ConsumerLag(ctx, p.Name())
			if err != nil {
				return fmt.Errorf("measure the lag of %s: %w", p.Name(), err)
			}
			behind = behind || lag > 0
		}
		if !behind {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
