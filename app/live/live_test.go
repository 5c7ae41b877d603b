package live

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/app/job"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// jobs is a job.Reader over a map: the hub only ever calls GetJob and ListJobs-free reads.
type jobs struct {
	job.Reader
	mu    sync.Mutex
	m     map[string]job.Job
	reads int
}

func newJobs(js ...job.Job) *jobs {
	r := &jobs{m: map[string]job.Job{}}
	for _, j := range js {
		r.m[j.ID] = j
	}
	return r
}

func (r *jobs) GetJob(_ context.Context, id string) (*job.Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads++
	j, ok := r.m[id]
	if !ok {
		return nil, job.ErrNotFound
	}
	return &j, nil
}

func (r *jobs) change(id string, fn func(j *job.Job)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.m[id]
	fn(&j)
	r.m[id] = j
}

func running(id, tenant string, total int64) job.Job {
	return job.Job{ID: id, Tenant: tenant, Type: "t", State: job.StateStep2Running, Seq: 2, Total: total}
}

func fastHub(t *testing.T, r job.Reader) *Hub {
	t.Helper()
	h, err := NewHub(r, Config{ProgressInterval: 5 * time.Millisecond, Refresh: 20 * time.Millisecond, ListInterval: 5 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func next(t *testing.T, ch <-chan Update) Update {
	t.Helper()
	select {
	case u, ok := <-ch:
		if !ok {
			t.Fatal("stream closed, want an update")
		}
		return u
	case <-time.After(10 * time.Second):
		t.Fatal("no update")
	}
	return Update{}
}

func closed(t *testing.T, ch <-chan Update) {
	t.Helper()
	select {
	case u, ok := <-ch:
		if ok {
			t.Fatalf("got %+v, want the stream closed", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream did not close")
	}
}

func TestSubscribeSnapshotThenChangesUntilTerminal(t *testing.T) {
	r := newJobs(running("j1", "acme", 10))
	h := fastHub(t, r)
	ch, err := h.Subscribe(context.Background(), "j1", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	snap := next(t, ch)
	if snap.Kind != KindSnapshot || snap.Seq != 4 || snap.Step != 2 {
		t.Fatalf("first update = %+v, want a snapshot at seq 4 (2 events + step 2's rank) in step 2", snap)
	}
	r.change("j1", func(j *job.Job) { j.Succeeded = 4 })
	h.Notify("j1", false)
	u := next(t, ch)
	if u.Kind != KindProgress || u.Seq != 8 || u.Job.Progress() != 0.4 {
		t.Fatalf("update = %+v (progress %v), want progress 0.4 at seq 8", u, u.Job.Progress())
	}
	r.change("j1", func(j *job.Job) { j.Succeeded = 10; j.State = job.StateStep3Running; j.Seq = 3 })
	h.Notify("j1", true)
	u = next(t, ch)
	if u.Kind != KindStepStarted || u.Step != 3 {
		t.Fatalf("update = %+v, want step 3 started", u)
	}
	r.change("j1", func(j *job.Job) { j.State = job.StateCompleted; j.Seq = 4 })
	h.Notify("j1", true)
	u = next(t, ch)
	if u.Kind != KindCompleted || u.Job.Progress() != 1 {
		t.Fatalf("update = %+v, want completed", u)
	}
	closed(t, ch)
}

func TestSubscribeResumesAfterSeq(t *testing.T) {
	j := running("j1", "acme", 10)
	j.Succeeded = 3 // version 2 + 3 + rank 2 = 7
	r := newJobs(j)
	h := fastHub(t, r)

	ch, err := h.Subscribe(context.Background(), "j1", "acme", 7)
	if err != nil {
		t.Fatal(err)
	}
	r.change("j1", func(j *job.Job) { j.Succeeded = 4 })
	h.Notify("j1", false)
	if u := next(t, ch); u.Kind != KindProgress || u.Seq != 8 {
		t.Fatalf("first update after resuming at the current seq = %+v, want progress at seq 8 (no snapshot)", u)
	}

	// Resuming from an older seq gets a snapshot of what was missed, never anything at or below afterSeq.
	ch2, err := h.Subscribe(context.Background(), "j1", "acme", 2)
	if err != nil {
		t.Fatal(err)
	}
	if u := next(t, ch2); u.Kind != KindSnapshot || u.Seq != 8 {
		t.Fatalf("first update after resuming at an old seq = %+v, want a snapshot at seq 8", u)
	}
}

func TestSubscribeTerminalJob(t *testing.T) {
	j := running("done", "acme", 2)
	j.State, j.Succeeded = job.StateCompleted, 2
	h := fastHub(t, newJobs(j))

	ch, err := h.Subscribe(context.Background(), "done", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	if u := next(t, ch); u.Kind != KindSnapshot || u.Job.State != job.StateCompleted {
		t.Fatalf("update = %+v, want a snapshot of the completed job", u)
	}
	closed(t, ch)

	ch, err = h.Subscribe(context.Background(), "done", "acme", j.Version())
	if err != nil {
		t.Fatal(err)
	}
	closed(t, ch) // nothing newer will ever come
}

func TestSubscribeOtherTenantIsNotFound(t *testing.T) {
	h := fastHub(t, newJobs(running("j1", "acme", 1)))
	for _, tc := range []struct{ id, tenant string }{{"j1", "globex"}, {"missing", "acme"}} {
		if _, err := h.Subscribe(context.Background(), tc.id, tc.tenant, 0); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("Subscribe(%s as %s) error = %v, want not found", tc.id, tc.tenant, err)
		}
	}
	if _, err := h.Subscribe(context.Background(), "j1", "", 0); err != nil {
		t.Errorf("Subscribe with no tenant (local use) = %v, want every tenant visible", err)
	}
}

// A client that does not read gets the newest progress and the terminal update, never a blocked hub
// nor an unbounded queue.
func TestSlowSubscriberGetsNewestProgressAndTerminal(t *testing.T) {
	r := newJobs(running("j1", "acme", 1000))
	h := fastHub(t, r)
	ch, err := h.Subscribe(context.Background(), "j1", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch) // snapshot
	other, err := h.Subscribe(context.Background(), "j1", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := int64(1); i <= 1000; i++ {
		r.change("j1", func(j *job.Job) { j.Succeeded = i })
		h.Notify("j1", false)
	}
	r.change("j1", func(j *job.Job) { j.State = job.StateCompleted; j.Seq = 5 })
	h.Notify("j1", true)

	var updates []Update
	for u := range ch {
		updates = append(updates, u)
	}
	last := updates[len(updates)-1]
	if last.Kind != KindCompleted || last.Job.Succeeded != 1000 {
		t.Fatalf("last update = %+v, want completed with 1000 succeeded", last)
	}
	if len(updates) > 100 {
		t.Errorf("%d updates for 1000 changes: progress was not coalesced", len(updates))
	}
	for i := 1; i < len(updates); i++ {
		if updates[i].Seq <= updates[i-1].Seq {
			t.Fatalf("seq %d after %d: not increasing", updates[i].Seq, updates[i-1].Seq)
		}
	}
	// The second subscriber, read only now, still ends with the terminal update.
	var lastOther Update
	for u := range other {
		lastOther = u
	}
	if lastOther.Kind != KindCompleted {
		t.Fatalf("other subscriber's last update = %+v, want completed", lastOther)
	}
}

// Notifications are hints: with most of them lost, the periodic refresh still brings every subscriber
// to the final state, in increasing seq.
func TestLostNotificationsAreCoveredByRefresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := newJobs(running("j1", "acme", 50))
	h := fastHub(t, r)
	ch, err := h.Subscribe(context.Background(), "j1", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := int64(1); i <= 50; i++ {
			r.change("j1", func(j *job.Job) { j.Succeeded = i })
			if rng.IntN(10) == 0 {
				h.Notify("j1", false)
			}
		}
		r.change("j1", func(j *job.Job) { j.State = job.StateCompleted; j.Seq = 5 })
		// The terminal notification is lost too.
	}()
	var prev int64
	var last Update
	for u := range ch {
		if u.Seq <= prev {
			t.Fatalf("seq %d after %d", u.Seq, prev)
		}
		prev, last = u.Seq, u
	}
	if last.Kind != KindCompleted || last.Job.Succeeded != 50 {
		t.Fatalf("last update = %+v, want completed with 50 succeeded", last)
	}
}

func TestUnsubscribeStopsWatchingAndCloseEndsStreams(t *testing.T) {
	r := newJobs(running("j1", "acme", 10), running("j2", "acme", 10))
	h, err := NewHub(r, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch1, err := h.Subscribe(ctx, "j1", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch1)
	ch2, err := h.Subscribe(context.Background(), "j2", "acme", 0)
	if err != nil {
		t.Fatal(err)
	}
	next(t, ch2)
	cancel()
	closed(t, ch1)
	waitFor(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		_, ok := h.watches["j1"]
		return !ok
	})
	h.Close()
	closed(t, ch2)
	if _, err := h.Subscribe(context.Background(), "j1", "acme", 0); err == nil {
		t.Fatal("Subscribe on a closed hub succeeded")
	}
}

func TestListFeedFiltersByTenantTypeAndState(t *testing.T) {
	a := running("a", "acme", 10)
	b := running("b", "globex", 10)
	c := running("c", "acme", 10)
	c.Type = "other"
	r := newJobs(a, b, c)
	h := fastHub(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all, err := h.SubscribeList(ctx, ListFilter{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	completed, err := h.SubscribeList(ctx, ListFilter{Tenant: "acme", Type: "t", States: []job.State{job.StateCompleted}})
	if err != nil {
		t.Fatal(err)
	}
	h.Notify("b", false) // another tenant's
	h.Notify("c", false)
	if j := <-all; j.ID != "c" {
		t.Fatalf("acme feed got %s, want c", j.ID)
	}
	r.change("a", func(j *job.Job) { j.State = job.StateCompleted })
	h.Notify("a", true)
	if j := <-completed; j.ID != "a" || j.State != job.StateCompleted {
		t.Fatalf("completed feed got %s in %s, want a completed", j.ID, j.State)
	}
	if j := <-all; j.ID != "a" {
		t.Fatalf("acme feed got %s, want a", j.ID)
	}
	cancel()
	for range all {
	}
	for range completed {
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeltaKinds(t *testing.T) {
	base := running("j", "t", 4)
	with := func(fn func(j *job.Job)) *job.Job { j := base; fn(&j); return &j }
	tests := []struct {
		name      string
		prev, cur *job.Job
		kind      Kind
		step      int
	}{
		{"first read", nil, with(func(*job.Job) {}), KindStepStarted, 2},
		{"counters", &base, with(func(j *job.Job) { j.Succeeded = 1 }), KindProgress, 2},
		{"next step", &base, with(func(j *job.Job) { j.State = job.StateStep3Running }), KindStepStarted, 3},
		{"pending", nil, with(func(j *job.Job) { j.State = job.StatePending }), KindProgress, 0},
		{"completed", &base, with(func(j *job.Job) { j.State = job.StateCompleted }), KindCompleted, 0},
		{"failed", &base, with(func(j *job.Job) { j.State = job.StateFailed }), KindFailed, 0},
		{"cancelled", &base, with(func(j *job.Job) { j.State = job.StateCancelled }), KindCancelled, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := delta(tt.prev, tt.cur)
			if u.Kind != tt.kind || u.Step != tt.step || u.Seq != tt.cur.Version() {
				t.Fatalf("delta = %+v, want kind %s step %d seq %d", u, tt.kind, tt.step, tt.cur.Version())
			}
		})
	}
}
