package notify_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/notify"
)

func TestBackoffSchedule(t *testing.T) {
	cfg := notify.DelivererConfig{BackoffBase: time.Second, BackoffMax: 30 * time.Second}.WithDefaults()
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		30 * time.Second, 30 * time.Second}
	for i, w := range want {
		if got := cfg.Backoff(i + 1); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	if got := cfg.Backoff(1000); got != 30*time.Second {
		t.Errorf("Backoff(1000) = %s, want the cap", got)
	}
}

func TestDelivererConfigDefaults(t *testing.T) {
	cases := []struct {
		name string
		in   notify.DelivererConfig
		want notify.DelivererConfig
	}{
		{"zero", notify.DelivererConfig{}, notify.DelivererConfig{PollInterval: time.Second, Concurrency: 8, MaxAttempts: 8,
			BackoffBase: time.Second, BackoffMax: 5 * time.Minute, RequestTimeout: 10 * time.Second, Lease: 40 * time.Second}},
		{"a lease shorter than a request grows", notify.DelivererConfig{RequestTimeout: time.Minute, Lease: time.Second},
			notify.DelivererConfig{PollInterval: time.Second, Concurrency: 8, MaxAttempts: 8, BackoffBase: time.Second,
				BackoffMax: 5 * time.Minute, RequestTimeout: time.Minute, Lease: time.Minute + time.Second}},
		{"a cap below the base is the base", notify.DelivererConfig{BackoffBase: time.Minute, BackoffMax: time.Second},
			notify.DelivererConfig{PollInterval: time.Second, Concurrency: 8, MaxAttempts: 8, BackoffBase: time.Minute,
				BackoffMax: time.Minute, RequestTimeout: 10 * time.Second, Lease: 40 * time.Second}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.in.WithDefaults(); got != c.want {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// answer is what a scripted sender returns for one attempt.
type answer struct {
	status int
	err    error
}

// scriptedSender answers each delivery's attempts in turn from script (the last answer repeats), and
// remembers what it was asked.
type scriptedSender struct {
	mu       sync.Mutex
	script   []answer
	calls    map[string]int
	secrets  []string
	block    bool // wait for the context to end instead of answering
	panics   bool
	inFlight atomic.Int64
	maxInFl  atomic.Int64
	gate     chan struct{} // when set, each send waits for it to close
}

func (s *scriptedSender) Send(ctx context.Context, t notify.Target, d notify.Delivery) (int, error) {
	n := s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	for {
		m := s.maxInFl.Load()
		if n <= m || s.maxInFl.CompareAndSwap(m, n) {
			break
		}
	}
	s.mu.Lock()
	if s.calls == nil {
		s.calls = map[string]int{}
	}
	s.calls[d.ID]++
	i := s.calls[d.ID] - 1
	s.secrets = append(s.secrets, string(t.Secret))
	s.mu.Unlock()
	if s.panics {
		panic("receiver exploded")
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if s.block {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	s.mu.Lock()
	a := s.script[min(i, len(s.script)-1)]
	s.mu.Unlock()
	return a.status, a.err
}

func (s *scriptedSender) callsOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[id]
}

// fastConfig retries within milliseconds.
func fastConfig() notify.DelivererConfig {
	return notify.DelivererConfig{PollInterval: time.Millisecond, Concurrency: 4, MaxAttempts: 4,
		BackoffBase: time.Millisecond, BackoffMax: 4 * time.Millisecond, RequestTimeout: 5 * time.Second}
}

// storeWithDeliveries has one webhook of acme and n pending deliveries for it.
func storeWithDeliveries(t *testing.T, n int) (*memStore, []string) {
	t.Helper()
	ctx := context.Background()
	store := newMemStore()
	if err := store.SaveWebhook(ctx, notify.Webhook{ID: "w", Tenant: "acme", URL: "https://receiver", CreatedAt: t0}, "whsec_k"); err != nil {
		t.Fatal(err)
	}
	var ns []notify.Notification
	for i := range n {
		ns = append(ns, notify.Notification{Type: notify.TypeJobCompleted, JobID: fmt.Sprintf("j%03d", i), Tenant: "acme", At: t0})
	}
	if _, err := store.RecordDeliveries(ctx, "acme", ns, time.Now()); err != nil {
		t.Fatal(err)
	}
	ds, _ := store.snapshot()
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return store, ids
}

// runDeliverer runs a deliverer until the test ends or stop is called.
func runDeliverer(t *testing.T, store notify.Store, sender notify.Sender, cfg notify.DelivererConfig) (stop func()) {
	t.Helper()
	d, err := notify.NewDeliverer(store, sender, cfg, time.Now, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, failing the test after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func deliveryState(t *testing.T, store *memStore, id string) notify.Delivery {
	t.Helper()
	d, err := store.Delivery(context.Background(), "acme", id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDelivererRetriesWithBackoffUntilDelivered(t *testing.T) {
	store, ids := storeWithDeliveries(t, 1)
	sender := &scriptedSender{script: []answer{{500, errors.New("HTTP 500: oops")}, {503, errors.New("HTTP 503")}, {200, nil}}}
	stop := runDeliverer(t, store, sender, fastConfig())
	waitFor(t, "the delivery to be delivered", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDelivered })
	stop()

	d := deliveryState(t, store, ids[0])
	if d.Attempts != 3 || d.LastStatusCode != 200 || d.LastError != "" || d.DeliveredAt.IsZero() || !d.NextAttemptAt.IsZero() {
		t.Fatalf("delivered delivery: %+v", d)
	}
	if sender.callsOf(ids[0]) != 3 {
		t.Fatalf("%d sends, want 3", sender.callsOf(ids[0]))
	}
	_, outcomes := store.snapshot()
	wantStates := []notify.DeliveryState{notify.DeliveryPending, notify.DeliveryPending, notify.DeliveryDelivered}
	if len(outcomes) != len(wantStates) {
		t.Fatalf("outcomes %+v", outcomes)
	}
	for i, o := range outcomes {
		if o.State != wantStates[i] || o.Attempts != i+1 {
			t.Fatalf("outcome %d: %+v", i, o)
		}
		if o.State == notify.DeliveryPending {
			// The retry waits the back-off of the attempt that failed: 1ms, then 2ms.
			if wait := o.NextAttemptAt.Sub(o.At); wait != time.Duration(1<<i)*time.Millisecond {
				t.Fatalf("outcome %d: next attempt %s after the failure, want %s", i, wait, time.Duration(1<<i)*time.Millisecond)
			}
		}
	}
	if outcomes[0].StatusCode != 500 || outcomes[0].Error != "HTTP 500: oops" || outcomes[1].StatusCode != 503 {
		t.Fatalf("failed attempts recorded as %+v", outcomes[:2])
	}
	for _, s := range sender.secrets {
		if s != "whsec_k" {
			t.Fatalf("the sender was given secret %q", s)
		}
	}
}

func TestDelivererDeadLettersAfterMaxAttempts(t *testing.T) {
	store, ids := storeWithDeliveries(t, 1)
	sender := &scriptedSender{script: []answer{{500, errors.New("HTTP 500: still broken")}}}
	cfg := fastConfig()
	cfg.MaxAttempts = 5
	stop := runDeliverer(t, store, sender, cfg)
	waitFor(t, "the delivery to be dead", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDead })
	stop()
	d := deliveryState(t, store, ids[0])
	if d.Attempts != 5 || d.LastStatusCode != 500 || d.LastError != "HTTP 500: still broken" || !d.NextAttemptAt.IsZero() || !d.DeliveredAt.IsZero() {
		t.Fatalf("dead delivery: %+v", d)
	}
	if sender.callsOf(ids[0]) != 5 {
		t.Fatalf("%d sends, want 5", sender.callsOf(ids[0]))
	}

	// Redelivered, it gets a fresh budget and goes through.
	svc, err := notify.NewService(store, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := svc.Redeliver(context.Background(), "acme", ids[0])
	if err != nil || rd.State != notify.DeliveryPending || rd.Attempts != 0 {
		t.Fatalf("Redeliver: %+v, %v", rd, err)
	}
	sender.mu.Lock()
	sender.script = []answer{{204, nil}}
	sender.calls = nil
	sender.mu.Unlock()
	runDeliverer(t, store, sender, cfg)
	waitFor(t, "the redelivery", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDelivered })
	if d := deliveryState(t, store, ids[0]); d.Attempts != 1 || d.LastStatusCode != 204 || d.LastError != "" {
		t.Fatalf("redelivered: %+v", d)
	}
}

func TestDelivererTimesOutAHangingReceiver(t *testing.T) {
	store, ids := storeWithDeliveries(t, 1)
	sender := &scriptedSender{block: true}
	cfg := fastConfig()
	cfg.RequestTimeout = 20 * time.Millisecond
	cfg.MaxAttempts = 2
	runDeliverer(t, store, sender, cfg)
	waitFor(t, "the delivery to be dead", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDead })
	d := deliveryState(t, store, ids[0])
	if d.Attempts != 2 || d.LastStatusCode != 0 || d.LastError != "no response within 20ms" {
		t.Fatalf("after time-outs: %+v", d)
	}
}

func TestDelivererSurvivesAPanickingSender(t *testing.T) {
	store, ids := storeWithDeliveries(t, 1)
	cfg := fastConfig()
	cfg.MaxAttempts = 1
	runDeliverer(t, store, &scriptedSender{panics: true}, cfg)
	waitFor(t, "the delivery to be dead", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDead })
	if d := deliveryState(t, store, ids[0]); !strings.Contains(d.LastError, "sender panicked: receiver exploded") {
		t.Fatalf("last error %q", d.LastError)
	}
}

func TestDelivererBoundsConcurrency(t *testing.T) {
	store, ids := storeWithDeliveries(t, 20)
	gate := make(chan struct{})
	sender := &scriptedSender{script: []answer{{200, nil}}, gate: gate}
	cfg := fastConfig()
	cfg.Concurrency = 3
	runDeliverer(t, store, sender, cfg)
	waitFor(t, "three sends under way", func() bool { return sender.inFlight.Load() == 3 })
	// A few more polls: none may start a fourth send while three are under way.
	time.Sleep(20 * cfg.PollInterval)
	close(gate)
	waitFor(t, "every delivery", func() bool {
		for _, id := range ids {
			if deliveryState(t, store, id).State != notify.DeliveryDelivered {
				return false
			}
		}
		return true
	})
	if m := sender.maxInFl.Load(); m != 3 {
		t.Fatalf("at most %d sends at once, want 3", m)
	}
}

func TestDelivererShutdownHandsBackAttemptsUnderWay(t *testing.T) {
	store, ids := storeWithDeliveries(t, 1)
	sender := &scriptedSender{block: true}
	cfg := fastConfig()
	cfg.RequestTimeout = time.Hour
	stop := runDeliverer(t, store, sender, cfg)
	waitFor(t, "the send to start", func() bool { return sender.inFlight.Load() == 1 })
	stop()
	d := deliveryState(t, store, ids[0])
	if d.State != notify.DeliveryPending || d.Attempts != 0 || d.NextAttemptAt.After(time.Now()) || d.LastError != "" {
		t.Fatalf("after shutdown: %+v", d)
	}
}

func TestDelivererDeadLettersAttemptsThatNeverReported(t *testing.T) {
	ctx := context.Background()
	store, ids := storeWithDeliveries(t, 1)
	// Two deliverers claimed it and vanished: their leases expired with the attempts counted.
	for range 2 {
		if cs, err := store.ClaimDeliveries(ctx, time.Now(), 0, 10); err != nil || len(cs) != 1 {
			t.Fatalf("claim: %v, %v", cs, err)
		}
	}
	sender := &scriptedSender{script: []answer{{200, nil}}}
	cfg := fastConfig()
	cfg.MaxAttempts = 2
	runDeliverer(t, store, sender, cfg)
	waitFor(t, "the delivery to be dead", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDead })
	if d := deliveryState(t, store, ids[0]); d.LastError != "no outcome recorded: the deliverer of the last attempt stopped" ||
		d.Attempts != 2 || sender.callsOf(ids[0]) != 0 {
		t.Fatalf("dead: %+v after %d sends", d, sender.callsOf(ids[0]))
	}
}

func TestDelivererKeepsPollingAfterStoreErrors(t *testing.T) {
	store, ids := storeWithDeliveries(t, 1)
	store.mu.Lock()
	store.claimErr = errors.New("database is down")
	store.mu.Unlock()
	sender := &scriptedSender{script: []answer{{200, nil}}}
	runDeliverer(t, store, sender, fastConfig())
	waitFor(t, "claims to fail", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.failedClaims >= 3
	})
	store.mu.Lock()
	store.claimErr = nil
	store.mu.Unlock()
	waitFor(t, "the delivery", func() bool { return deliveryState(t, store, ids[0]).State == notify.DeliveryDelivered })
}
