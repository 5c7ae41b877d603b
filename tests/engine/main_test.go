// Package engine_test runs the whole engine in process — service.New with the embedded SQLite backend,
// the router, workers, manager and ticker — against job types defined by the tests, and checks what a
// user of the engine relies on: exact counts, duplicates absorbed, retries, time-outs, cancellation,
// poison handling and restart.
package engine_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/sqlite"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/service"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait: it is only there so that a broken engine fails the test instead of hanging
// it, never a performance assertion.
var waitLimit = 2 * time.Minute

func init() {
	if d, err := time.ParseDuration(os.Getenv("ENGINE_TEST_WAIT")); err == nil {
		waitLimit = d
	}
}

// lockedBuffer collects a service's log; it is printed when the test fails.
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

// engine is one running service.
type engine struct {
	t      *testing.T
	svc    *service.Service
	path   string
	cancel context.CancelFunc
	runErr chan error
	logs   *lockedBuffer
	once   sync.Once
}

// newPath returns a fresh database file for a test.
func newPath(t *testing.T) string { return filepath.Join(t.TempDir(), "data", "jobmill.db") }

// startEngine starts a service on the database at path with the given types. tune adjusts the test
// configuration (Workers 4; Tick stays at the default 1s: under -race a fast tick of many jobs floods the manager) before the service is built.
func startEngine(t *testing.T, path string, types *jobtype.Registry, tune func(*config.Config), options ...func(*service.Options)) *engine {
	t.Helper()
	cfg := config.Default()
	cfg.SQLite.Path = path
	cfg.Listen = "127.0.0.1:0"
	cfg.OutboxDir = filepath.Join(filepath.Dir(path), "outbox")
	cfg.Workers = 4
	if tune != nil {
		tune(&cfg)
	}
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	opts := service.Options{Types: types, Logger: logger}
	for _, o := range options {
		o(&opts)
	}
	svc, err := service.New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatalf("service.New: %v", err)
	}
	e := &engine{t: t, svc: svc, path: path, cancel: cancel, runErr: make(chan error, 1), logs: logs}
	go func() { e.runErr <- svc.Run(ctx) }()
	t.Cleanup(e.stop)
	select {
	case <-svc.Running():
	case err := <-e.runErr:
		e.runErr <- err
		t.Fatalf("service stopped before running: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("service did not start running")
	}
	return e
}

// stop cancels Run, waits for it and closes the service. It is idempotent.
func (e *engine) stop() {
	e.once.Do(func() {
		e.cancel()
		select {
		case err := <-e.runErr:
			if err != nil {
				e.t.Errorf("service Run: %v", err)
			}
		case <-time.After(waitLimit):
			e.t.Errorf("service Run did not return after cancel")
		}
		if err := e.svc.Close(); err != nil {
			e.t.Errorf("service Close: %v", err)
		}
		if e.t.Failed() {
			e.t.Logf("service log (warn and above):\n%s", e.logs.String())
		}
	})
}

func (e *engine) submit(tenant, typ string, input any) string {
	e.t.Helper()
	raw, err := json.Marshal(input)
	if err != nil {
		e.t.Fatal(err)
	}
	id, err := e.svc.App.Commands.SubmitJob.Handle(context.Background(), command.SubmitJob{Tenant: tenant, Type: typ, Input: raw})
	if err != nil {
		e.t.Fatalf("submit %s job: %v", typ, err)
	}
	return id
}

func (e *engine) status(id string) query.JobStatus {
	e.t.Helper()
	st, err := e.svc.App.Queries.JobStatus.Handle(context.Background(), id, "")
	if err != nil {
		e.t.Fatalf("status of job %s: %v", id, err)
	}
	return st
}

// waitFor polls the job's status until cond holds.
func (e *engine) waitFor(id, what string, cond func(*job.Job) bool) query.JobStatus {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st := e.status(id)
		if cond(st.Job) {
			return st
		}
		if time.Now().After(deadline) {
			dump := filepath.Join(os.TempDir(), fmt.Sprintf("jobmill-engine-test-%s-goroutines.txt", id))
			if f, err := os.Create(dump); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 2)
				_ = f.Close()
				e.t.Logf("goroutines at the time-out written to %s", dump)
			}
			e.t.Fatalf("job %s: %s did not happen within %s; last status: %s\n%s", id, what, waitLimit, describe(st), diagnose(e.path))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEnded waits until the job reached a terminal state and returns its status.
func (e *engine) waitEnded(id string) query.JobStatus {
	e.t.Helper()
	return e.waitFor(id, "reaching a terminal state", func(j *job.Job) bool { return j.State.Terminal() })
}

// waitCompleted waits for the job to end and fails the test unless it completed.
func (e *engine) waitCompleted(id string) query.JobStatus {
	e.t.Helper()
	st := e.waitEnded(id)
	if st.Job.State != job.StateCompleted {
		e.t.Fatalf("job %s ended %s, want COMPLETED: %s", id, st.Job.State, describe(st))
	}
	return st
}

// diagnose describes the transport's state for a failure message: what waits on the work queues and how
// far the manager read the event log.
func diagnose(path string) string {
	db, err := sqlite.Open(path)
	if err != nil {
		return "diagnose: " + err.Error()
	}
	defer db.Close()
	var b strings.Builder
	now := time.Now().UnixMilli()
	rows, err := db.Read.Query(`SELECT topic, COUNT(*), SUM(available_at <= ?), MIN(available_at) - ?, MAX(available_at) - ?, MAX(deliveries) FROM jobmill_queue GROUP BY topic`, now, now, now)
	if err != nil {
		return "diagnose: " + err.Error()
	}
	for rows.Next() {
		var topic string
		var n, avail, minAt, maxAt, deliveries int64
		_ = rows.Scan(&topic, &n, &avail, &minAt, &maxAt, &deliveries)
		fmt.Fprintf(&b, "queue %s: %d messages, %d available now, available_at in [%+dms, %+dms], max deliveries %d\n", topic, n, avail, minAt, maxAt, deliveries)
	}
	rows.Close()
	var last, acked sql.NullInt64
	_ = db.Read.QueryRow(`SELECT MAX("offset") FROM "watermill_jobmill.events"`).Scan(&last)
	_ = db.Read.QueryRow(`SELECT offset_acked FROM "watermill_offsets_jobmill.events" WHERE consumer_group = 'manager'`).Scan(&acked)
	fmt.Fprintf(&b, "event log: last offset %d, manager acked %d\n", last.Int64, acked.Int64)
	return b.String()
}

func describe(st query.JobStatus) string {
	j := st.Job
	if j == nil {
		return "<no job>"
	}
	return fmt.Sprintf("state=%s total=%d next=%d inflight=%d succeeded=%d failed=%d retries=%d timedout=%d duplicates=%d late=%d error=%q subjobs=%v",
		j.State, j.Total, j.NextIndex, j.InFlight, j.Succeeded, j.Failed, j.Retries, j.TimedOut, j.Duplicates, j.Late, j.Error, st.SubJobs)
}

// calls records sub-job executions by idempotency key; it is safe for concurrent workers.
type calls struct {
	mu       sync.Mutex
	byKey    map[string][]int // attempts seen per key, in call order
	total    int
	onceStep map[string]int // step-3 runs per job
}

func newCalls() *calls { return &calls{byKey: map[string][]int{}, onceStep: map[string]int{}} }

func (c *calls) record(key string, attempt int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKey[key] = append(c.byKey[key], attempt)
	c.total++
}

func (c *calls) step3(jobID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onceStep[jobID]++
}

func (c *calls) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func (c *calls) attempts(key string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.byKey[key]...)
}

func (c *calls) step3Runs(jobID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.onceStep[jobID]
}

// countInput is the input of the test job types: N sub-jobs.
type countInput struct {
	N int `json:"n"`
}

type itemInput struct {
	I int `json:"i"`
}

// splitN splits {"n":N} into N inputs {"i":k}.
func splitN(_ context.Context, _ jobtype.StepContext, out []byte, emit func([]byte) error) error {
	var in countInput
	if err := json.Unmarshal(out, &in); err != nil {
		return err
	}
	for i := range in.N {
		b, _ := json.Marshal(itemInput{I: i})
		if err := emit(b); err != nil {
			return err
		}
	}
	return nil
}

func parseItem(raw []byte) (int, error) {
	var it itemInput
	if err := json.Unmarshal(raw, &it); err != nil {
		return 0, fmt.Errorf("sub-job input %q: %w", raw, err)
	}
	return it.I, nil
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errFirstAttempt = errors.New("first attempt fails on purpose")

func registry(t *testing.T, defs ...jobtype.Definition) *jobtype.Registry {
	t.Helper()
	r := jobtype.NewRegistry()
	for _, d := range defs {
		if err := r.Register(d); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// noBackoff retries at once: a Backoff with Initial 0 must carry a Multiplier, or WithDefaults replaces
// the whole (zero) Backoff with the default one-second backoff.
var noBackoff = jobtype.Backoff{Initial: 0, Multiplier: 1}
