// Command custom-jobtype embeds jobmill in a program of its own and runs a job type defined here:
// "thumbnails" lists N images (step 1), resizes each one in its own sub-job (step 2) and writes an index of
// the thumbnails (step 3). It starts the engine on its own SQLite file, submits one job, waits for it to
// end, prints its status and exits.
//
//	go run ./examples/custom-jobtype -images 500
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/service"
)

// Input of a thumbnails job.
type Input struct {
	Images int `json:"images"`
}

// thumbnails returns the job type. outDir is where thumbnails and indexes are written.
func thumbnails(outDir string) jobtype.Definition {
	return jobtype.Definition{
		Name: "thumbnails",
		// Step 1 would list a bucket; here it echoes the input and Split invents the names.
		Split: func(ctx context.Context, _ jobtype.StepContext, step1Output []byte, emit func([]byte) error) error {
			var in Input
			if err := json.Unmarshal(step1Output, &in); err != nil {
				return err
			}
			// Deterministic order: a re-run step 1 must emit the same inputs at the same indexes.
			for i := range in.Images {
				if err := emit(fmt.Appendf(nil, "photo-%05d.jpg", i)); err != nil {
					return err
				}
			}
			return nil
		},
		// Each sub-job runs at least once, maybe twice: its output file is named by the idempotency key,
		// so a second run finds the file and does nothing.
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, image []byte) ([]byte, error) {
			path := filepath.Join(outDir, filepath.FromSlash(sc.IdempotencyKey)+".thumb")
			if err := writeOnce(path, fmt.Appendf(nil, "thumbnail of %s\n", image)); err != nil {
				return nil, err
			}
			return []byte(path), nil // the result step 3 reads back
		},
		Step3: func(ctx context.Context, sc jobtype.StepContext, s jobtype.Summary) ([]byte, error) {
			var index strings.Builder
			err := s.Results(func(i int64, path []byte) error {
				fmt.Fprintf(&index, "%d\t%s\n", i, path)
				return nil
			})
			if err != nil {
				return nil, err
			}
			path := filepath.Join(outDir, sc.JobID, "index.txt")
			if err := writeOnce(path, []byte(index.String())); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]any{"index": path, "thumbnails": s.Succeeded, "failed": s.Failed})
		},
		Policy: jobtype.Policy{SubJobTimeout: 30 * time.Second, MaxAttempts: 5},
	}
}

func main() {
	images := flag.Int("images", 200, "how many images the job lists")
	dataDir := flag.String("data", filepath.Join(os.TempDir(), "jobmill-thumbnails"), "where the database and thumbnails go")
	flag.Parse()
	if err := run(*images, *dataDir); err != nil {
		log.Fatal(err)
	}
}

func run(images int, dataDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	types := jobtype.NewRegistry()
	types.MustRegister(thumbnails(filepath.Join(dataDir, "thumbnails")))

	cfg := config.Default()
	cfg.SQLite.Path = filepath.Join(dataDir, "jobmill.db")
	cfg.Listen = "127.0.0.1:0" // any free port: this program serves nothing
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	svc, err := service.New(ctx, cfg, service.Options{Types: types, Logger: logger})
	if err != nil {
		return err
	}
	defer svc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()

	input, _ := json.Marshal(Input{Images: images})
	id, err := svc.App.Commands.SubmitJob.Handle(ctx, command.SubmitJob{Type: "thumbnails", Input: input})
	if err != nil {
		return err
	}
	fmt.Printf("submitted thumbnails job %s (%d images, data in %s)\n", id, images, dataDir)

	select {
	case state := <-svc.Recorder.Ended(id):
		fmt.Printf("job %s ended %s\n", id, state)
	case err := <-runErr:
		return fmt.Errorf("engine stopped: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	st, err := svc.App.Queries.JobStatus.Handle(ctx, id, "")
	if err != nil {
		return err
	}
	j := st.Job
	fmt.Printf("  sub-jobs: %d total, %d succeeded, %d failed, %d retries\n", j.Total, j.Succeeded, j.Failed, j.Retries)
	fmt.Printf("  took %s\n  output: %s\n", j.EndedAt.Sub(j.CreatedAt).Round(time.Millisecond), j.Output)

	cancel()
	return <-runErr
}

// writeOnce writes path atomically unless it exists, so a repeated run leaves one complete file.
func writeOnce(path string, content []byte) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	// A temporary file of its own: a timed-out attempt may still be writing while its retry runs.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
