package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/worker"
)

// jobs answers GetJob from a map; the worker reads nothing else for sub-jobs.
type jobs struct {
	job.Reader
	job.SubJobWriter
	mu     sync.Mutex
	states map[string]job.State
}

func (s *jobs) GetJob(_ context.Context, id string) (*job.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.states[id]
	if !ok {
		return nil, job.ErrNotFound
	}
	return &job.Job{ID: id, State: st}, nil
}

func (s *jobs) set(id string, st job.State) {
	s.mu.Lock()
	s.states[id] = st
	s.mu.Unlock()
}

// publishes records each Publish call's events.
type publishes struct {
	mu    sync.Mutex
	calls [][]job.Message
}

func (p *publishes) Publish(_ context.Context, events ...job.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, events)
	return nil
}

// outcomes renders the published reports as "index#attempt:ok" or "index#attempt:error", per publish.
func (p *publishes) outcomes() []string {
	var out []string
	for _, call := range p.calls {
		var one []string
		if len(call) != 1 {
			out = append(out, fmt.Sprintf("%d events in one publish", len(call)))
			continue
		}
		reported, ok := call[0].(job.Step2SubjobsReported)
		if !ok || reported.JobID != "j" {
			out = append(out, fmt.Sprintf("published %+v", call[0]))
			continue
		}
		for _, e := range reported.Reports() {
			switch e := e.(type) {
			case job.Step2SubjobCompleted:
				one = append(one, fmt.Sprintf("%d#%d:%s", e.Index, e.Attempt, e.Result))
			case job.Step2SubjobFailed:
				one = append(one, fmt.Sprintf("%d#%d:error", e.Index, e.Attempt))
			}
		}
		out = append(out, strings.Join(one, ","))
	}
	return out
}

// clock advances by step on every reading, so a command's runs take measurable time.
type clock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

func runs(indexes ...int64) []job.SubJobRun {
	out := make([]job.SubJobRun, len(indexes))
	for i, idx := range indexes {
		out[i] = job.SubJobRun{Index: idx, Attempt: 1, Input: []byte(fmt.Sprint(idx))}
	}
	return out
}

func TestRunSubJobs(t *testing.T) {
	tests := []struct {
		name string
		runs []job.SubJobRun
		// subJob is the type's function; nil: returns "ok".
		subJob   func(ctx context.Context, sc jobtype.SubJobContext, in []byte) ([]byte, error)
		step     time.Duration // clock step per reading
		cancel   bool          // the worker shuts down during sub-job 1
		wantErr  bool
		want     []string // one entry per publish
		typeName string
	}{
		{name: "all succeed: one publish", runs: runs(0, 1, 2), want: []string{"0#1:ok,1#1:ok,2#1:ok"}},
		{name: "a failure is reported with the rest", runs: runs(4, 5),
			subJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
				if sc.Index == 5 {
					return nil, errors.New("smtp refused")
				}
				return []byte("ok"), nil
			},
			want: []string{"4#1:ok,5#1:error"}},
		{name: "a panic fails only its own sub-job", runs: runs(0, 1),
			subJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
				if sc.Index == 0 {
					panic("boom")
				}
				return []byte("ok"), nil
			},
			want: []string{"1#1:ok,0#1:error"}},
		{name: "slow sub-jobs are reported as they pass the report interval", runs: runs(0, 1, 2, 3),
			step: 300 * time.Millisecond, want: []string{"0#1:ok,1#1:ok", "2#1:ok,3#1:ok"}},
		{name: "shutdown reports what finished and asks for redelivery", runs: runs(0, 1, 2), cancel: true,
			wantErr: true, want: []string{"0#1:ok"}},
		{name: "large results are reported before the rest", runs: runs(0, 1, 2),
			subJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
				if sc.Index == 1 {
					return bytes.Repeat([]byte("r"), job.MaxCommandInputBytes), nil
				}
				return []byte("ok"), nil
			},
			want: []string{"0#1:ok,1#1:" + strings.Repeat("r", job.MaxCommandInputBytes), "2#1:ok"}},
		{name: "unknown type fails every sub-job", runs: runs(7, 8), typeName: "nope", want: []string{"7#1:error,8#1:error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			subJob := tt.subJob
			if subJob == nil {
				subJob = func(ctx context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
					if tt.cancel && sc.Index == 1 {
						cancel()
						<-ctx.Done()
						return nil, ctx.Err()
					}
					return []byte("ok"), nil
				}
			}
			types := jobtype.NewRegistry()
			types.MustRegister(jobtype.Definition{Name: "t", Split: func(context.Context, jobtype.StepContext, []byte, func([]byte) error) error { return nil }, SubJob: subJob})
			store := &jobs{states: map[string]job.State{"j": job.StateStep2Running}}
			pub := &publishes{}
			clk := &clock{now: time.Unix(0, 0), step: tt.step}
			w, err := worker.New(types, store, pub, clk.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			typeName := "t"
			if tt.typeName != "" {
				typeName = tt.typeName
			}
			err = w.RunSubJobs(ctx, &job.RunSubJobs{JobID: "j", Type: typeName, Runs: tt.runs})
			if (err != nil) != tt.wantErr {
				t.Fatalf("RunSubJobs error = %v, want error %v", err, tt.wantErr)
			}
			if got := pub.outcomes(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("published %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRunSubJobsStopsWhenTheJobEnds(t *testing.T) {
	store := &jobs{states: map[string]job.State{"j": job.StateStep2Running}}
	ran := 0
	types := jobtype.NewRegistry()
	types.MustRegister(jobtype.Definition{Name: "t", Split: func(context.Context, jobtype.StepContext, []byte, func([]byte) error) error { return nil },
		SubJob: func(context.Context, jobtype.SubJobContext, []byte) ([]byte, error) {
			ran++
			store.set("j", job.StateCancelled)
			return nil, nil
		}})
	pub := &publishes{}
	// The real clock: the worker trusts a running job's state for a short while only.
	w, err := worker.New(types, store, pub, time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.RunSubJobs(context.Background(), &job.RunSubJobs{JobID: "j", Type: "t", Runs: runs(0)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the cache's trust in "running"
	if err := w.RunSubJobs(context.Background(), &job.RunSubJobs{JobID: "j", Type: "t", Runs: runs(1, 2, 3)}); err != nil {
		t.Fatal(err)
	}
	if ran != 1 {
		t.Fatalf("%d sub-jobs ran, want 1: the rest belong to a cancelled job", ran)
	}
	if got := pub.outcomes(); fmt.Sprint(got) != "[0#1:]" {
		t.Fatalf("published %q", got)
	}
}
