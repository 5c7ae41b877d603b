package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/service"
)

// waitLimit bounds every wait so that a broken engine fails instead of hanging; never a performance bound.
const waitLimit = 3 * time.Minute

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// engine is one in-process service on an env.
type engine struct {
	t      *testing.T
	svc    *service.Service
	cancel context.CancelFunc
	runErr chan error
	logs   *lockedBuffer
	once   sync.Once
}

// skipIfUnsupported skips a combination service cannot run yet, naming what it refused.
func skipIfUnsupported(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, service.ErrUnsupportedBackend) || (err != nil && strings.Contains(err.Error(), service.ErrUnsupportedBackend.Error())) {
		t.Skipf("pending: service does not run this combination yet: %v", err)
	}
}

func startEngine(t *testing.T, e *env, types *jobtype.Registry, decorate func(kind, group string, sub messageSubscriber) messageSubscriber) *engine {
	t.Helper()
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	opts := service.Options{Types: types, Logger: logger}
	if decorate != nil {
		opts.DecorateSubscriber = decorate
	}
	svc, err := service.New(ctx, e.cfg, opts)
	if err != nil {
		cancel()
		skipIfUnsupported(t, err)
		t.Fatalf("service.New: %v", err)
	}
	en := &engine{t: t, svc: svc, cancel: cancel, runErr: make(chan error, 1), logs: logs}
	go func() { en.runErr <- svc.Run(ctx) }()
	t.Cleanup(en.stop)
	select {
	case <-svc.Running():
	case err := <-en.runErr:
		en.runErr <- err
		t.Fatalf("service stopped before running: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("service did not start running")
	}
	return en
}

// stop cancels Run, waits for it and closes the service; idempotent.
func (en *engine) stop() {
	en.once.Do(func() {
		en.cancel()
		select {
		case err := <-en.runErr:
			if err != nil {
				en.t.Errorf("service Run: %v", err)
			}
		case <-time.After(waitLimit):
			en.t.Errorf("service Run did not return after cancel")
		}
		if err := en.svc.Close(); err != nil {
			en.t.Errorf("service Close: %v", err)
		}
		if en.t.Failed() || os.Getenv("CONFORMANCE_LOGS") != "" {
			en.t.Logf("service log (warn and above, last 60 lines):\n%s", tail(en.logs.String(), 60))
		}
	})
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func (en *engine) submit(typ string, input any) string {
	en.t.Helper()
	raw, err := json.Marshal(input)
	if err != nil {
		en.t.Fatal(err)
	}
	id, err := en.svc.App.Commands.SubmitJob.Handle(context.Background(), command.SubmitJob{Tenant: "conformance", Type: typ, Input: raw})
	if err != nil {
		en.t.Fatalf("submit %s job: %v", typ, err)
	}
	return id
}

// status reads the job's status; errors (a dropped connection) are returned, not fatal.
func (en *engine) status(id string) (query.JobStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return en.svc.App.Queries.JobStatus.Handle(ctx, id, "")
}

// waitFor polls the job's status until cond holds; transient read errors are retried until the deadline.
func (en *engine) waitFor(id, what string, cond func(*job.Job) bool) query.JobStatus {
	en.t.Helper()
	deadline := time.Now().Add(waitLimit)
	var last query.JobStatus
	var lastErr error
	trace := os.Getenv("CONFORMANCE_TRACE") != ""
	lastTrace := time.Now()
	for {
		st, err := en.status(id)
		if trace && time.Since(lastTrace) > time.Second {
			lastTrace = time.Now()
			en.t.Logf("trace: %s (err %v)", describe(st), err)
		}
		if err == nil {
			last, lastErr = st, nil
			if cond(st.Job) {
				return st
			}
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			en.t.Fatalf("job %s: %s did not happen within %s; last status: %s (last read error: %v)", id, what, waitLimit, describe(last), lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (en *engine) waitCompleted(id string) query.JobStatus {
	en.t.Helper()
	st := en.waitFor(id, "reaching a terminal state", func(j *job.Job) bool { return j.State.Terminal() })
	if st.Job.State != job.StateCompleted {
		en.t.Fatalf("job %s ended %s, want COMPLETED: %s", id, st.Job.State, describe(st))
	}
	return st
}

func describe(st query.JobStatus) string {
	j := st.Job
	if j == nil {
		return "<no job>"
	}
	return fmt.Sprintf("state=%s total=%d next=%d inflight=%d succeeded=%d failed=%d retries=%d timedout=%d duplicates=%d late=%d error=%q subjobs=%v",
		j.State, j.Total, j.NextIndex, j.InFlight, j.Succeeded, j.Failed, j.Retries, j.TimedOut, j.Duplicates, j.Late, j.Error, st.SubJobs)
}

// checkCounts requires a completed job with every one of n sub-jobs succeeded and none failed.
func checkCounts(t *testing.T, st query.JobStatus, n int64) {
	t.Helper()
	j := st.Job
	if j.State != job.StateCompleted || j.Total != n || j.Succeeded != n || j.Failed != 0 || j.InFlight != 0 || j.NextIndex != n {
		t.Errorf("counters: %s; want COMPLETED total=succeeded=next=%d, failed=inflight=0", describe(st), n)
	}
	if len(st.SubJobs) != 1 || st.SubJobs[job.SubJobSucceeded] != n {
		t.Errorf("sub-job states %v, want all %d SUCCEEDED", st.SubJobs, n)
	}
	var out map[string]int64
	if err := json.Unmarshal(j.Output, &out); err != nil || out["total"] != n || out["succeeded"] != n || out["failed"] != 0 {
		t.Errorf("step 3 output %s (%v), want total=succeeded=%d failed=0", j.Output, err, n)
	}
}

// counting is a test job type: {"n":N} splits into N sub-jobs that sleep sleep (0: no-op); it counts
// step-3 runs per job.
type counting struct {
	mu       sync.Mutex
	step3    map[string]int
	subjobs  int
	name     string
	sleep    time.Duration
	registry *jobtype.Registry
	// gate, when set, holds sub-jobs from index gateFrom on until it is closed, so that a test can act
	// while step 2 is certainly still running.
	gate     chan struct{}
	gateFrom int64
}

// holdFrom makes sub-jobs from index i on wait until release is called.
func (c *counting) holdFrom(i int64) (release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate, c.gateFrom = make(chan struct{}), i
	var once sync.Once
	gate := c.gate
	return func() { once.Do(func() { close(gate) }) }
}

func (c *counting) gateFor(index int64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gate == nil || index < c.gateFrom {
		return nil
	}
	return c.gate
}

type countInput struct {
	N int `json:"n"`
}

func newCounting(t *testing.T, name string, sleep time.Duration) *counting {
	t.Helper()
	c := &counting{step3: map[string]int{}, name: name, sleep: sleep, registry: jobtype.NewRegistry()}
	err := c.registry.Register(jobtype.Definition{
		Name: name,
		Split: func(_ context.Context, _ jobtype.StepContext, out []byte, emit func([]byte) error) error {
			var in countInput
			if err := json.Unmarshal(out, &in); err != nil {
				return err
			}
			for i := range in.N {
				if err := emit([]byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
					return err
				}
			}
			return nil
		},
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			c.mu.Lock()
			c.subjobs++
			c.mu.Unlock()
			if gate := c.gateFor(sc.Index); gate != nil {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if c.sleep > 0 {
				select {
				case <-time.After(c.sleep):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return nil, nil
		},
		Step3: func(_ context.Context, sc jobtype.StepContext, s jobtype.Summary) ([]byte, error) {
			c.mu.Lock()
			c.step3[sc.JobID]++
			c.mu.Unlock()
			return json.Marshal(map[string]int64{"total": s.Total, "succeeded": s.Succeeded, "failed": s.Failed})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *counting) step3Runs(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.step3[id]
}

func (c *counting) subjobRuns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subjobs
}
