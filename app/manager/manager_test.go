package manager_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/job/jobtest"
	"github.com/jobmill/jobmill/app/manager"
)

// ---- in-memory job store -------------------------------------------------------------------------------

// memState is everything the store holds; a transaction works on a deep copy of it.
type memState struct {
	jobs map[string]*job.Job
	subs map[string]map[int64]*job.SubJob
	keys map[string]string // tenant + "\x00" + idempotency key → job id
}

func cloneJob(j *job.Job) *job.Job {
	c := *j
	c.Input = bytes.Clone(j.Input)
	c.Output = bytes.Clone(j.Output)
	return &c
}

func cloneSub(s *job.SubJob) *job.SubJob {
	c := *s
	c.Input = bytes.Clone(s.Input)
	c.Result = bytes.Clone(s.Result)
	return &c
}

func (st memState) clone() memState {
	c := memState{
		jobs: make(map[string]*job.Job, len(st.jobs)),
		subs: make(map[string]map[int64]*job.SubJob, len(st.subs)),
		keys: make(map[string]string, len(st.keys)),
	}
	for id, j := range st.jobs {
		c.jobs[id] = cloneJob(j)
	}
	for id, subs := range st.subs {
		m := make(map[int64]*job.SubJob, len(subs))
		for i, s := range subs {
			m[i] = cloneSub(s)
		}
		c.subs[id] = m
	}
	for k, v := range st.keys {
		c.keys[k] = v
	}
	return c
}

// memStore is a job.Store in memory. Transactions are serialised by one mutex; each works on a copy of the
// state that replaces the committed state only when its function returns nil, so a failed handler leaves
// nothing behind. Published messages become visible on commit.
type memStore struct {
	mu       sync.Mutex
	state    memState
	events   []job.Message
	commands []job.Message
	commits  int

	// Fault injection: the next n calls fail.
	failSaveSubJob int
	failPublish    int
}

var errInjected = errors.New("injected failure")

func newMemStore() *memStore {
	return &memStore{state: memState{jobs: map[string]*job.Job{}, subs: map[string]map[int64]*job.SubJob{}, keys: map[string]string{}}}
}

type memTx struct {
	store    *memStore
	state    memState
	events   []job.Message
	commands []job.Message
	after    []func()
}

func (s *memStore) Update(ctx context.Context, fn func(ctx context.Context, tx job.Tx) error) error {
	s.mu.Lock()
	tx := &memTx{store: s, state: s.state.clone()}
	if err := fn(ctx, tx); err != nil {
		s.mu.Unlock() // rollback: the copy is dropped
		return err
	}
	s.state = tx.state
	s.events = append(s.events, tx.events...)
	s.commands = append(s.commands, tx.commands...)
	s.commits++
	s.mu.Unlock()
	for _, f := range tx.after {
		f()
	}
	return nil
}

func notFound(what string) error { return fmt.Errorf("%s: %w", what, job.ErrNotFound) }

func (t *memTx) Job(_ context.Context, id string) (*job.Job, error) {
	j, ok := t.state.jobs[id]
	if !ok {
		return nil, notFound("job " + id)
	}
	return cloneJob(j), nil
}

func (t *memTx) CreateJob(_ context.Context, j *job.Job, key string) (string, error) {
	if key != "" {
		if id, ok := t.state.keys[j.Tenant+"\x00"+key]; ok {
			return id, job.ErrDuplicateSubmission
		}
		t.state.keys[j.Tenant+"\x00"+key] = j.ID
	}
	if _, ok := t.state.jobs[j.ID]; ok {
		return "", fmt.Errorf("job %s exists", j.ID)
	}
	t.state.jobs[j.ID] = cloneJob(j)
	t.state.subs[j.ID] = map[int64]*job.SubJob{}
	return "", nil
}

func (t *memTx) SaveJob(_ context.Context, j *job.Job) error {
	if _, ok := t.state.jobs[j.ID]; !ok {
		return notFound("job " + j.ID)
	}
	t.state.jobs[j.ID] = cloneJob(j)
	return nil
}

func (t *memTx) SubJob(_ context.Context, jobID string, index int64) (*job.SubJob, error) {
	s, ok := t.state.subs[jobID][index]
	if !ok {
		return nil, notFound(fmt.Sprintf("sub-job %d of %s", index, jobID))
	}
	return cloneSub(s), nil
}

func (t *memTx) SaveSubJob(_ context.Context, s *job.SubJob) error {
	if t.store.failSaveSubJob > 0 {
		t.store.failSaveSubJob--
		return errInjected
	}
	if _, ok := t.state.subs[s.JobID][s.Index]; !ok {
		return notFound(fmt.Sprintf("sub-job %d of %s", s.Index, s.JobID))
	}
	t.state.subs[s.JobID][s.Index] = cloneSub(s)
	return nil
}

func (t *memTx) PendingSubJobs(_ context.Context, jobID string, r job.Range) ([]*job.SubJob, error) {
	var out []*job.SubJob
	for i := r.From; i < r.To; i++ {
		if s, ok := t.state.subs[jobID][i]; ok && s.State == job.SubJobPending {
			out = append(out, cloneSub(s))
		}
	}
	return out, nil
}

func (t *memTx) SaveDispatched(_ context.Context, subs []*job.SubJob) error {
	for _, s := range subs {
		cur, ok := t.state.subs[s.JobID][s.Index]
		if !ok {
			return notFound(fmt.Sprintf("sub-job %d of %s", s.Index, s.JobID))
		}
		if cur.State == job.SubJobPending {
			t.state.subs[s.JobID][s.Index] = cloneSub(s)
		}
	}
	return nil
}

func dueAt(s *job.SubJob) time.Time {
	if s.State == job.SubJobRetryWait {
		return s.NextAttemptAt
	}
	return s.Deadline
}

func (t *memTx) DueSubJobs(_ context.Context, jobID string, now time.Time, limit int) ([]*job.SubJob, error) {
	var out []*job.SubJob
	for _, s := range t.state.subs[jobID] {
		if (s.State == job.SubJobRunning || s.State == job.SubJobRetryWait) && !dueAt(s).After(now) {
			out = append(out, cloneSub(s))
		}
	}
	sort.Slice(out, func(a, b int) bool {
		if !dueAt(out[a]).Equal(dueAt(out[b])) {
			return dueAt(out[a]).Before(dueAt(out[b]))
		}
		return out[a].Index < out[b].Index
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (t *memTx) AfterCommit(fn func()) { t.after = append(t.after, fn) }

func (t *memTx) Publish(_ context.Context, fx job.Effects) error {
	if t.store.failPublish > 0 {
		t.store.failPublish--
		return errInjected
	}
	t.events = append(t.events, fx.Events...)
	t.commands = append(t.commands, fx.Commands...)
	return nil
}

func (s *memStore) AddSubJobs(_ context.Context, jobID string, first int64, inputs [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	subs, ok := s.state.subs[jobID]
	if !ok {
		return notFound("job " + jobID)
	}
	for k, in := range inputs {
		i := first + int64(k)
		if _, ok := subs[i]; !ok {
			subs[i] = &job.SubJob{JobID: jobID, Index: i, State: job.SubJobPending, Input: bytes.Clone(in)}
		}
	}
	return nil
}

func (s *memStore) GetJob(_ context.Context, id string) (*job.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.state.jobs[id]
	if !ok {
		return nil, notFound("job " + id)
	}
	return cloneJob(j), nil
}

func (s *memStore) ListJobs(_ context.Context, f job.ListFilter) ([]*job.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*job.Job
	for _, j := range s.state.jobs {
		if (f.Tenant == "" || j.Tenant == f.Tenant) && (f.Type == "" || j.Type == f.Type) &&
			(len(f.States) == 0 || slices.Contains(f.States, j.State)) && j.ID > f.AfterID {
			out = append(out, cloneJob(j))
		}
	}
	slices.SortFunc(out, func(a, b *job.Job) int { return cmpString(a.ID, b.ID) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *memStore) CountSubJobs(_ context.Context, jobID string) (map[job.SubJobState]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[job.SubJobState]int64{}
	for _, sub := range s.state.subs[jobID] {
		out[sub.State]++
	}
	return out, nil
}

func (s *memStore) sortedSubs(jobID string) []*job.SubJob {
	var out []*job.SubJob
	for _, sub := range s.state.subs[jobID] {
		out = append(out, cloneSub(sub))
	}
	slices.SortFunc(out, func(a, b *job.SubJob) int { return int(a.Index - b.Index) })
	return out
}

func (s *memStore) ForEachResult(_ context.Context, jobID string, fn func(int64, []byte) error) error {
	s.mu.Lock()
	subs := s.sortedSubs(jobID)
	s.mu.Unlock()
	for _, sub := range subs {
		if sub.State == job.SubJobSucceeded {
			if err := fn(sub.Index, sub.Result); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *memStore) ListSubJobs(_ context.Context, jobID string, state job.SubJobState, after int64, limit int) ([]*job.SubJob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*job.SubJob
	for _, sub := range s.sortedSubs(jobID) {
		if sub.Index > after && (state == "" || sub.State == state) && (limit <= 0 || len(out) < limit) {
			sub.Input, sub.Result = nil, nil
			out = append(out, sub)
		}
	}
	return out, nil
}

func (s *memStore) DueJobs(_ context.Context, now time.Time, after string, limit int) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, j := range s.state.jobs {
		if id <= after || j.State.Step() == 0 {
			continue
		}
		due := j.StepAttempt > 0 && !now.Before(j.StepDeadline)
		for _, sub := range s.state.subs[id] {
			if (sub.State == job.SubJobRunning && !now.Before(sub.Deadline)) || (sub.State == job.SubJobRetryWait && !now.Before(sub.NextAttemptAt)) {
				due = true
			}
		}
		if due {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if limit > 0 && len(ids) > limit {
		ids = ids[:limit]
	}
	return ids, nil
}

var _ job.Store = (*memStore)(nil)

// Test helpers reading the committed state.

func (s *memStore) published() (events, commands []job.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events), slices.Clone(s.commands)
}

func (s *memStore) job(t *testing.T, id string) *job.Job {
	t.Helper()
	j, err := s.GetJob(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (s *memStore) sub(t *testing.T, jobID string, index int64) *job.SubJob {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.state.subs[jobID][index]
	if !ok {
		t.Fatalf("no sub-job %d", index)
	}
	return cloneSub(sub)
}

func (s *memStore) snapshot() (memState, int, int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.clone(), len(s.events), len(s.commands), s.commits
}

// ---- the in-memory store rolls back -------------------------------------------------------------------

func TestMemStoreRollsBack(t *testing.T) {
	s := newMemStore()
	ctx := context.Background()
	j, fx, _ := job.New("j", "t", "x", nil, job.Policy{}, t0)
	if err := s.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		if _, err := tx.CreateJob(ctx, j, "k"); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	}); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := s.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		j, _ := tx.Job(ctx, "j")
		j.State = job.StateFailed
		if err := tx.SaveJob(ctx, j); err != nil {
			return err
		}
		tx.AfterCommit(func() { ran = true })
		if err := tx.Publish(ctx, job.Effects{Events: []job.Message{job.JobFailed{JobID: "j"}}}); err != nil {
			return err
		}
		return errInjected
	})
	if !errors.Is(err, errInjected) || ran {
		t.Fatalf("Update = %v, after-commit ran %v", err, ran)
	}
	if got := s.job(t, "j"); got.State != job.StatePending {
		t.Errorf("rolled-back state visible: %s", got.State)
	}
	if ev, _ := s.published(); len(ev) != 1 {
		t.Errorf("rolled-back events visible: %v", ev)
	}
	if err := s.Update(ctx, func(ctx context.Context, tx job.Tx) error {
		id, err := tx.CreateJob(ctx, &job.Job{ID: "j2", Tenant: "t"}, "k")
		if !errors.Is(err, job.ErrDuplicateSubmission) || id != "j" {
			t.Errorf("second submission = %q, %v", id, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ---- fixtures -------------------------------------------------------------------------------------------

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type absorbed struct {
	jobID   string
	outcome job.Outcome
}

type recorder struct {
	mu       sync.Mutex
	closed   []time.Duration
	absorbed []absorbed
	ended    []job.State
}

func (r *recorder) Step2Closed(_ string, fanIn time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, fanIn)
}

func (r *recorder) Absorbed(jobID string, o job.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.absorbed = append(r.absorbed, absorbed{jobID, o})
}

func (r *recorder) JobEnded(_ string, s job.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = append(r.ended, s)
}

func (r *recorder) counts() (closed, absorbedN, ended int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.closed), len(r.absorbed), len(r.ended)
}

type fixture struct {
	t     *testing.T
	ctx   context.Context
	store *memStore
	clock *fakeClock
	obs   *recorder
	m     *manager.Manager
}

func newFixture(t *testing.T, window int) *fixture {
	t.Helper()
	f := &fixture{t: t, ctx: context.Background(), store: newMemStore(), clock: &fakeClock{now: t0}, obs: &recorder{}}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := manager.New(f.store, manager.Config{Window: window}, f.clock.Now, f.obs, logger)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

func testPolicy() job.Policy {
	return job.Policy{
		SubJobTimeout: time.Minute,
		StepTimeout:   10 * time.Minute,
		MaxAttempts:   3,
		Backoff:       job.Backoff{Multiplier: 1}, // retries start at once
	}
}

// submit creates a job the way the submit command does and returns its JobStarted.
func (f *fixture) submit(id string, p job.Policy) *job.JobStarted {
	f.t.Helper()
	j, fx, err := job.New(id, "acme", "invoices", []byte("in"), p, f.clock.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.Update(f.ctx, func(ctx context.Context, tx job.Tx) error {
		if _, err := tx.CreateJob(ctx, j, ""); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	}); err != nil {
		f.t.Fatal(err)
	}
	e := fx.Events[0].(job.JobStarted)
	return &e
}

// startStep2 submits a job, runs step 1 and stores its total sub-jobs.
func (f *fixture) startStep2(id string, p job.Policy, total int) {
	f.t.Helper()
	f.must(f.m.OnJobStarted(f.ctx, f.submit(id, p)))
	inputs := make([][]byte, total)
	for i := range inputs {
		inputs[i] = []byte{byte(i)}
	}
	f.must(f.store.AddSubJobs(f.ctx, id, 0, inputs))
	f.must(f.m.OnStep1Completed(f.ctx, &job.Step1Completed{JobID: id, Attempt: 1, Total: int64(total), At: f.clock.Now()}))
}

func (f *fixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func ofType[T job.Message](msgs []job.Message) []T {
	var out []T
	for _, m := range msgs {
		if v, ok := m.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// subJobRun is one sub-job attempt sent to the workers, with its job.
type subJobRun struct {
	JobID string
	job.SubJobRun
}

// runsOf lists the sub-job attempts of the RunSubJobs commands among msgs, in order.
func runsOf(msgs []job.Message) []subJobRun {
	var out []subJobRun
	for _, c := range ofType[job.RunSubJobs](msgs) {
		for _, r := range c.Runs {
			out = append(out, subJobRun{JobID: c.JobID, SubJobRun: r})
		}
	}
	return out
}

func completed(c subJobRun) *job.Step2SubjobCompleted {
	return &job.Step2SubjobCompleted{JobID: c.JobID, Index: c.Index, Attempt: c.Attempt, Result: []byte(fmt.Sprintf("r%d", c.Index))}
}

// ---- tests ----------------------------------------------------------------------------------------------

func TestNewRequiresDependencies(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, obs := newMemStore(), &recorder{}
	for name, fn := range map[string]func() (*manager.Manager, error){
		"no store": func() (*manager.Manager, error) {
			return manager.New(nil, manager.Config{Window: 1}, time.Now, obs, logger)
		},
		"no clock": func() (*manager.Manager, error) { return manager.New(s, manager.Config{Window: 1}, nil, obs, logger) },
		"no observer": func() (*manager.Manager, error) {
			return manager.New(s, manager.Config{Window: 1}, time.Now, nil, logger)
		},
		"no logger": func() (*manager.Manager, error) { return manager.New(s, manager.Config{Window: 1}, time.Now, obs, nil) },
		"no window": func() (*manager.Manager, error) { return manager.New(s, manager.Config{}, time.Now, obs, logger) },
	} {
		if m, err := fn(); err == nil || m != nil {
			t.Errorf("%s: New = %v, %v", name, m, err)
		}
	}
}

func TestFullFlow(t *testing.T) {
	const total, window = 25, 4
	f := newFixture(t, window)
	started := f.submit("job-1", testPolicy())

	f.must(f.m.OnJobStarted(f.ctx, started))
	f.must(f.m.OnJobStarted(f.ctx, started)) // redelivered
	_, cmds := f.store.published()
	if steps := ofType[job.RunStep1](cmds); len(steps) != 1 || steps[0].Attempt != 1 || string(steps[0].Input) != "in" {
		t.Fatalf("RunStep1 commands = %+v", steps)
	}

	inputs := make([][]byte, total)
	for i := range inputs {
		inputs[i] = []byte(fmt.Sprintf("in%d", i))
	}
	f.must(f.store.AddSubJobs(f.ctx, "job-1", 0, inputs))
	f.must(f.store.AddSubJobs(f.ctx, "job-1", 0, inputs)) // step 1 ran twice
	s1 := &job.Step1Completed{JobID: "job-1", Attempt: 1, Total: total}
	f.must(f.m.OnStep1Completed(f.ctx, s1))
	f.must(f.m.OnStep1Completed(f.ctx, s1))

	// Workers: every sub-job run reports twice; reports are consumed in random order.
	rng := rand.New(rand.NewPCG(1, 2))
	var pool []*job.Step2SubjobCompleted
	seen := 0 // commands already handed to workers
	take := func() {
		_, cmds := f.store.published()
		for _, rc := range runsOf(cmds[seen:]) {
			if rc.Attempt != 1 || string(rc.Input) != fmt.Sprintf("in%d", rc.Index) {
				t.Fatalf("unexpected command %+v", rc)
			}
			pool = append(pool, completed(rc), completed(rc))
		}
		seen = len(cmds)
	}
	take()
	if len(pool) != 2*window {
		t.Fatalf("first window dispatched %d sub-jobs, want %d", len(pool)/2, window)
	}
	for len(pool) > 0 {
		i := rng.IntN(len(pool))
		e := pool[i]
		pool = slices.Delete(pool, i, i+1)
		f.clock.Advance(time.Millisecond)
		f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(e)))
		if j := f.store.job(t, "job-1"); j.InFlight > window || j.InFlight < 0 {
			t.Fatalf("in flight %d", j.InFlight)
		}
		take()
	}

	events, cmds := f.store.published()
	closed := ofType[job.Step2Completed](events)
	if len(closed) != 1 || closed[0].Succeeded != total || closed[0].Failed != 0 {
		t.Fatalf("Step2Completed = %+v", closed)
	}
	if n := len(runsOf(cmds)); n != total {
		t.Fatalf("%d sub-job runs sent, want %d", n, total)
	}
	j := f.store.job(t, "job-1")
	if j.State != job.StateStep3Running || j.Succeeded != total || j.Duplicates+j.Late != total || j.InFlight != 0 {
		t.Fatalf("job after step 2 = %+v", j)
	}
	if counts, _ := f.store.CountSubJobs(f.ctx, "job-1"); counts[job.SubJobSucceeded] != total || len(counts) != 1 {
		t.Errorf("sub-job states = %v", counts)
	}

	f.must(f.m.OnStep2Completed(f.ctx, &closed[0]))
	f.must(f.m.OnStep2Completed(f.ctx, &closed[0]))
	_, cmds = f.store.published()
	step3 := ofType[job.RunStep3](cmds)
	if len(step3) != 1 || step3[0].Attempt != 1 {
		t.Fatalf("RunStep3 commands = %+v", step3)
	}
	done := &job.Step3Completed{JobID: "job-1", Attempt: 1, Output: []byte("report")}
	f.must(f.m.OnStep3Completed(f.ctx, done))
	f.must(f.m.OnStep3Completed(f.ctx, done))

	events, _ = f.store.published()
	if n := len(ofType[job.JobCompleted](events)); n != 1 {
		t.Fatalf("%d JobCompleted events", n)
	}
	var last int64
	for _, e := range events {
		var seq int64
		switch e := e.(type) {
		case job.JobStarted:
			seq = e.Seq
		case job.Step2Started:
			seq = e.Seq
		case job.Step2Completed:
			seq = e.Seq
		case job.JobCompleted:
			seq = e.Seq
		default:
			t.Fatalf("unexpected event %T", e)
		}
		if seq <= last {
			t.Fatalf("event seq %d after %d", seq, last)
		}
		last = seq
	}
	j = f.store.job(t, "job-1")
	if j.State != job.StateCompleted || string(j.Output) != "report" || j.Progress() != 1 {
		t.Errorf("final job = %+v", j)
	}
	var results []int64
	f.must(f.store.ForEachResult(f.ctx, "job-1", func(i int64, r []byte) error {
		if string(r) != fmt.Sprintf("r%d", i) {
			t.Errorf("result %d = %q", i, r)
		}
		results = append(results, i)
		return nil
	}))
	if len(results) != total {
		t.Errorf("%d results", len(results))
	}

	closedN, absorbedN, endedN := f.obs.counts()
	if closedN != 1 || endedN != 1 || f.obs.ended[0] != job.StateCompleted {
		t.Errorf("observer: Step2Closed %d, JobEnded %v", closedN, f.obs.ended)
	}
	// duplicates/late completions + JobStarted, Step1Completed, Step2Completed and Step3Completed redelivered
	if want := total + 4; absorbedN != want {
		t.Errorf("observer absorbed %d reports, want %d", absorbedN, want)
	}
}

// Completions consumed concurrently (many partitions, one store) still close step 2 exactly once.
func TestConcurrentCompletions(t *testing.T) {
	const total = 60
	f := newFixture(t, 16)
	f.startStep2("job-c", testPolicy(), total)

	var wg sync.WaitGroup
	work := make(chan *job.Step2SubjobCompleted)
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				if err := f.m.OnSubJobsReported(f.ctx, jobtest.Completed(e)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	seen := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, cmds := f.store.published()
		if seen == len(cmds) {
			if f.store.job(t, "job-c").State != job.StateStep2Running {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("step 2 never closed")
			}
			time.Sleep(time.Millisecond)
			continue
		}
		for _, rc := range runsOf(cmds[seen:]) {
			for range 3 {
				work <- completed(rc)
			}
		}
		seen = len(cmds)
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	events, _ := f.store.published()
	if n := len(ofType[job.Step2Completed](events)); n != 1 {
		t.Fatalf("%d Step2Completed events", n)
	}
	j := f.store.job(t, "job-c")
	if j.Succeeded != total || j.Duplicates+j.Late != 2*total {
		t.Errorf("succeeded %d duplicates %d late %d", j.Succeeded, j.Duplicates, j.Late)
	}
	if closedN, _, _ := f.obs.counts(); closedN != 1 {
		t.Errorf("Step2Closed %d times", closedN)
	}
}

// A handler that fails leaves nothing behind, and its redelivery is applied as if for the first time.
func TestFailedHandlerRollsBack(t *testing.T) {
	f := newFixture(t, 2)
	f.startStep2("job-r", testPolicy(), 3)

	// SaveSubJob fails: the completion must vanish, counters included.
	before, nEvents, nCmds, commits := f.store.snapshot()
	f.store.mu.Lock()
	f.store.failSaveSubJob = 1
	f.store.mu.Unlock()
	f.clock.Advance(time.Second)
	e := &job.Step2SubjobCompleted{JobID: "job-r", Index: 0, Attempt: 1, Result: []byte("ok")}
	if err := f.m.OnSubJobsReported(f.ctx, jobtest.Completed(e)); !errors.Is(err, errInjected) {
		t.Fatalf("OnSubJobCompleted = %v, want the injected error", err)
	}
	after, nEvents2, nCmds2, commits2 := f.store.snapshot()
	if fmt.Sprint(after.jobs["job-r"]) != fmt.Sprint(before.jobs["job-r"]) || commits2 != commits {
		t.Fatalf("job changed by a failed handler:\n%+v\n%+v", after.jobs["job-r"], before.jobs["job-r"])
	}
	for i, s := range before.subs["job-r"] {
		if fmt.Sprint(after.subs["job-r"][i]) != fmt.Sprint(s) {
			t.Fatalf("sub-job %d changed by a failed handler", i)
		}
	}
	if nEvents2 != nEvents || nCmds2 != nCmds {
		t.Fatalf("failed handler published %d events %d commands", nEvents2-nEvents, nCmds2-nCmds)
	}
	if c, a, en := f.obs.counts(); c+a+en != 0 {
		t.Fatalf("observer told about a rolled-back decision")
	}

	// The redelivery is applied: a new window slot opens and sub-job 2 is dispatched.
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(e)))
	j := f.store.job(t, "job-r")
	if j.Succeeded != 1 || j.Duplicates != 0 || j.InFlight != 2 || j.NextIndex != 3 {
		t.Fatalf("redelivery not applied: %+v", j)
	}
	if s := f.store.sub(t, "job-r", 0); s.State != job.SubJobSucceeded || string(s.Result) != "ok" {
		t.Fatalf("sub-job 0 = %+v", s)
	}
	if s := f.store.sub(t, "job-r", 2); s.State != job.SubJobRunning || s.Attempt != 1 {
		t.Fatalf("sub-job 2 = %+v", s)
	}
	if _, a, _ := f.obs.counts(); a != 0 {
		t.Fatalf("redelivery counted as absorbed")
	}

	// Publishing the event that closes step 2 fails: step 2 must still be open afterwards.
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(&job.Step2SubjobCompleted{JobID: "job-r", Index: 1, Attempt: 1})))
	f.store.mu.Lock()
	f.store.failPublish = 1
	f.store.mu.Unlock()
	last := &job.Step2SubjobCompleted{JobID: "job-r", Index: 2, Attempt: 1}
	if err := f.m.OnSubJobsReported(f.ctx, jobtest.Completed(last)); !errors.Is(err, errInjected) {
		t.Fatalf("OnSubJobCompleted = %v", err)
	}
	if j := f.store.job(t, "job-r"); j.State != job.StateStep2Running || j.Succeeded != 2 {
		t.Fatalf("rolled-back close visible: %+v", j)
	}
	if c, _, _ := f.obs.counts(); c != 0 {
		t.Fatal("Step2Closed reported for a rolled-back transaction")
	}
	f.clock.Advance(250 * time.Millisecond)
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(last)))
	events, _ := f.store.published()
	if n := len(ofType[job.Step2Completed](events)); n != 1 {
		t.Fatalf("%d Step2Completed", n)
	}
	if f.obs.closed[0] != 0 {
		// consumed and committed at the same fake instant: fan-in is measured on the manager's clock
		t.Errorf("fan-in %s measured off the manager's clock", f.obs.closed[0])
	}
}

func TestTickTimesOutSubJob(t *testing.T) {
	t.Run("immediate retry", func(t *testing.T) {
		f := newFixture(t, 10)
		f.startStep2("job-t", testPolicy(), 2)
		dispatchedAt := f.clock.Now()
		f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(&job.Step2SubjobCompleted{JobID: "job-t", Index: 1, Attempt: 1})))

		_, cmds := f.store.published()
		n := len(cmds)
		f.clock.Advance(time.Minute - time.Nanosecond)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-t"}))
		if _, cmds := f.store.published(); len(cmds) != n {
			t.Fatalf("tick before the deadline sent %v", cmds[n:])
		}
		f.clock.Advance(time.Nanosecond)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-t"}))
		_, cmds = f.store.published()
		retries := runsOf(cmds[n:])
		if len(retries) != 1 || retries[0].Index != 0 || retries[0].Attempt != 2 || string(retries[0].Input) != "\x00" {
			t.Fatalf("tick sent %+v", cmds[n:])
		}
		s := f.store.sub(t, "job-t", 0)
		if s.State != job.SubJobRunning || s.Attempt != 2 || !s.Deadline.Equal(dispatchedAt.Add(2*time.Minute)) {
			t.Fatalf("sub-job after time-out = %+v", s)
		}
		j := f.store.job(t, "job-t")
		if j.TimedOut != 1 || j.Retries != 1 || j.Duplicates != 0 || j.InFlight != 1 {
			t.Fatalf("job after time-out = %+v", j)
		}
		// The same tick redelivered finds nothing due.
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-t"}))
		if _, cmds := f.store.published(); len(cmds) != n+1 {
			t.Fatalf("second tick sent %v", cmds[n+1:])
		}
		if _, a, _ := f.obs.counts(); a != 0 {
			t.Errorf("ticks counted as absorbed reports")
		}
		// The timed-out attempt finishes after all: it counts and closes step 2.
		f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(&job.Step2SubjobCompleted{JobID: "job-t", Index: 0, Attempt: 1})))
		if j := f.store.job(t, "job-t"); j.State != job.StateStep3Running || j.Succeeded != 2 {
			t.Fatalf("job = %+v", j)
		}
	})

	t.Run("retry after backoff", func(t *testing.T) {
		f := newFixture(t, 10)
		p := testPolicy()
		p.Backoff = job.Backoff{Initial: 10 * time.Second, Max: time.Minute, Multiplier: 2}
		f.startStep2("job-b", p, 1)
		_, cmds := f.store.published()
		n := len(cmds)
		f.clock.Advance(time.Minute)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-b"}))
		if s := f.store.sub(t, "job-b", 0); s.State != job.SubJobRetryWait || !s.NextAttemptAt.Equal(f.clock.Now().Add(10*time.Second)) {
			t.Fatalf("sub-job = %+v", s)
		}
		f.clock.Advance(5 * time.Second)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-b"}))
		if _, cmds := f.store.published(); len(cmds) != n {
			t.Fatalf("retry before the backoff elapsed: %v", cmds[n:])
		}
		f.clock.Advance(5 * time.Second)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-b"}))
		_, cmds = f.store.published()
		if r := runsOf(cmds[n:]); len(r) != 1 || r[0].Attempt != 2 {
			t.Fatalf("tick sent %v", cmds[n:])
		}
	})

	t.Run("last attempt times out and fails the job", func(t *testing.T) {
		f := newFixture(t, 10)
		p := testPolicy()
		p.MaxAttempts = 1
		f.startStep2("job-f", p, 3)
		f.clock.Advance(time.Hour)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-f"}))
		j := f.store.job(t, "job-f")
		if j.State != job.StateFailed || j.Failed != 1 {
			t.Fatalf("job = %+v", j)
		}
		events, _ := f.store.published()
		if n := len(ofType[job.JobFailed](events)); n != 1 {
			t.Fatalf("%d JobFailed", n)
		}
		if _, _, en := f.obs.counts(); en != 1 || f.obs.ended[0] != job.StateFailed {
			t.Errorf("JobEnded = %v", f.obs.ended)
		}
	})

	t.Run("step 1 times out", func(t *testing.T) {
		f := newFixture(t, 10)
		f.must(f.m.OnJobStarted(f.ctx, f.submit("job-s", testPolicy())))
		f.clock.Advance(10 * time.Minute)
		f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-s"}))
		_, cmds := f.store.published()
		if r := ofType[job.RunStep1](cmds); len(r) != 2 || r[1].Attempt != 2 {
			t.Fatalf("RunStep1 = %+v", r)
		}
	})
}

// A sub-job that fails every attempt is retried and then fails the job once.
func TestSubJobFailures(t *testing.T) {
	f := newFixture(t, 10)
	f.startStep2("job-x", testPolicy(), 2)
	for attempt := 1; attempt <= 3; attempt++ {
		e := &job.Step2SubjobFailed{JobID: "job-x", Index: 0, Attempt: attempt, Error: "boom"}
		f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Failed(e)))
		f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Failed(e))) // redelivered: stale now
	}
	_, cmds := f.store.published()
	var attempts []int
	for _, c := range runsOf(cmds) {
		if c.Index == 0 {
			attempts = append(attempts, c.Attempt)
		}
	}
	if fmt.Sprint(attempts) != "[1 2 3]" {
		t.Fatalf("attempts sent = %v", attempts)
	}
	j := f.store.job(t, "job-x")
	if j.State != job.StateFailed || j.Failed != 1 || j.Retries != 2 || j.Duplicates != 2 || j.Late != 1 {
		t.Fatalf("job = %+v", j)
	}
	if _, _, en := f.obs.counts(); en != 1 {
		t.Errorf("JobEnded %d times", en)
	}
}

func TestLateCompletionAfterCancel(t *testing.T) {
	f := newFixture(t, 10)
	f.startStep2("job-l", testPolicy(), 2)
	// Cancel the way the cancel command does.
	f.clock.Advance(time.Second)
	f.must(f.store.Update(f.ctx, func(ctx context.Context, tx job.Tx) error {
		j, err := tx.Job(ctx, "job-l")
		if err != nil {
			return err
		}
		fx, err := j.Cancel("user", f.clock.Now())
		if err != nil {
			return err
		}
		if err := tx.SaveJob(ctx, j); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	}))
	before, nEvents, nCmds, _ := f.store.snapshot()
	f.clock.Advance(time.Second)
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(&job.Step2SubjobCompleted{JobID: "job-l", Index: 0, Attempt: 1, Result: []byte("x")})))
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Failed(&job.Step2SubjobFailed{JobID: "job-l", Index: 1, Attempt: 1})))
	f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-l"}))
	after, nEvents2, nCmds2, _ := f.store.snapshot()

	j := after.jobs["job-l"]
	if j.Late != 2 {
		t.Fatalf("late = %d, want 2", j.Late)
	}
	normalized := *j
	normalized.Late = before.jobs["job-l"].Late
	if fmt.Sprint(normalized) != fmt.Sprint(*before.jobs["job-l"]) {
		t.Errorf("late reports changed the job:\n%+v\n%+v", normalized, *before.jobs["job-l"])
	}
	for i, s := range before.subs["job-l"] {
		if fmt.Sprint(after.subs["job-l"][i]) != fmt.Sprint(s) {
			t.Errorf("sub-job %d changed: %+v", i, after.subs["job-l"][i])
		}
	}
	if nEvents2 != nEvents || nCmds2 != nCmds {
		t.Errorf("late reports published %d events %d commands", nEvents2-nEvents, nCmds2-nCmds)
	}
	f.obs.mu.Lock()
	defer f.obs.mu.Unlock()
	if len(f.obs.absorbed) != 2 || f.obs.absorbed[0].outcome != job.Late || len(f.obs.ended) != 0 || len(f.obs.closed) != 0 {
		t.Errorf("observer: %+v", f.obs)
	}
}

func TestUnknownJobIsAcked(t *testing.T) {
	f := newFixture(t, 10)
	f.startStep2("job-k", testPolicy(), 1)
	before, nEvents, nCmds, _ := f.store.snapshot()
	for name, fn := range map[string]func() error{
		"JobStarted":     func() error { return f.m.OnJobStarted(f.ctx, &job.JobStarted{JobID: "ghost"}) },
		"Step1Completed": func() error { return f.m.OnStep1Completed(f.ctx, &job.Step1Completed{JobID: "ghost", Total: 3}) },
		"SubjobCompleted": func() error {
			return f.m.OnSubJobsReported(f.ctx, jobtest.Completed(&job.Step2SubjobCompleted{JobID: "ghost", Index: 0, Attempt: 1}))
		},
		"SubjobFailed": func() error {
			return f.m.OnSubJobsReported(f.ctx, jobtest.Failed(&job.Step2SubjobFailed{JobID: "ghost", Attempt: 1}))
		},
		"Step2Completed": func() error { return f.m.OnStep2Completed(f.ctx, &job.Step2Completed{JobID: "ghost"}) },
		"Step3Completed": func() error { return f.m.OnStep3Completed(f.ctx, &job.Step3Completed{JobID: "ghost"}) },
		"StepFailed":     func() error { return f.m.OnStepFailed(f.ctx, &job.StepFailed{JobID: "ghost", Step: 1, Attempt: 1}) },
		"Tick":           func() error { return f.m.OnTick(f.ctx, &job.Tick{JobID: "ghost"}) },
	} {
		if err := fn(); err != nil {
			t.Errorf("%s for an unknown job = %v, want nil (ack)", name, err)
		}
	}
	after, nEvents2, nCmds2, _ := f.store.snapshot()
	if len(after.jobs) != 1 || fmt.Sprint(after.jobs["job-k"]) != fmt.Sprint(before.jobs["job-k"]) {
		t.Errorf("store changed: %v", after.jobs)
	}
	if nEvents2 != nEvents || nCmds2 != nCmds {
		t.Errorf("published %d events %d commands", nEvents2-nEvents, nCmds2-nCmds)
	}
	if c, a, e := f.obs.counts(); c+a+e != 0 {
		t.Errorf("observer called for unknown jobs")
	}

	// A report for a sub-job index the job does not have is dropped too.
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Completed(&job.Step2SubjobCompleted{JobID: "job-k", Index: 99, Attempt: 1})))
	f.must(f.m.OnSubJobsReported(f.ctx, jobtest.Failed(&job.Step2SubjobFailed{JobID: "job-k", Index: -1, Attempt: 1})))
	if j := f.store.job(t, "job-k"); j.Succeeded != 0 || j.State != job.StateStep2Running || j.InFlight != 1 {
		t.Errorf("job changed by reports for unknown sub-jobs: %+v", j)
	}
}

func TestStepFailedRetriesThenFails(t *testing.T) {
	f := newFixture(t, 10)
	f.must(f.m.OnJobStarted(f.ctx, f.submit("job-s", testPolicy())))
	for attempt := 1; attempt <= 3; attempt++ {
		e := &job.StepFailed{JobID: "job-s", Step: 1, Attempt: attempt, Error: "nope"}
		f.must(f.m.OnStepFailed(f.ctx, e))
		f.must(f.m.OnStepFailed(f.ctx, e))
	}
	events, cmds := f.store.published()
	if r := ofType[job.RunStep1](cmds); len(r) != 3 {
		t.Fatalf("RunStep1 = %+v", r)
	}
	if n := len(ofType[job.JobFailed](events)); n != 1 {
		t.Fatalf("%d JobFailed", n)
	}
	if j := f.store.job(t, "job-s"); j.State != job.StateFailed {
		t.Fatalf("state = %s", j.State)
	}
	if _, _, en := f.obs.counts(); en != 1 || f.obs.ended[0] != job.StateFailed {
		t.Errorf("JobEnded = %v", f.obs.ended)
	}
}

// Time-outs that fail sub-jobs for good free window slots: one tick dispatches the next sub-jobs as one
// merged range.
func TestTickRefillsWindow(t *testing.T) {
	f := newFixture(t, 2)
	p := testPolicy()
	p.MaxAttempts, p.ToleratedFailures = 1, 5
	f.startStep2("job-w", p, 5)
	_, cmds := f.store.published()
	n := len(cmds)
	f.clock.Advance(time.Minute)
	f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-w"}))
	_, cmds = f.store.published()
	var got []string
	for _, c := range runsOf(cmds[n:]) {
		got = append(got, fmt.Sprintf("%d#%d", c.Index, c.Attempt))
	}
	if fmt.Sprint(got) != "[2#1 3#1]" {
		t.Fatalf("tick dispatched %v, want sub-jobs 2 and 3", got)
	}
	j := f.store.job(t, "job-w")
	if j.Failed != 2 || j.TimedOut != 2 || j.InFlight != 2 || j.NextIndex != 4 || j.State != job.StateStep2Running {
		t.Fatalf("job = %+v", j)
	}
	for i := int64(2); i < 4; i++ {
		if s := f.store.sub(t, "job-w", i); s.State != job.SubJobRunning || !s.Deadline.Equal(f.clock.Now().Add(time.Minute)) {
			t.Fatalf("sub-job %d = %+v", i, s)
		}
	}
	// Two more ticks time out everything left; step 2 closes with every sub-job failed but tolerated.
	f.clock.Advance(time.Minute)
	f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-w"}))
	f.clock.Advance(time.Minute)
	f.must(f.m.OnTick(f.ctx, &job.Tick{JobID: "job-w"}))
	events, _ := f.store.published()
	closed := ofType[job.Step2Completed](events)
	if len(closed) != 1 || closed[0].Failed != 5 || closed[0].Succeeded != 0 {
		t.Fatalf("Step2Completed = %+v", closed)
	}
}
