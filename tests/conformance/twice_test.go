package conformance

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/stats"
)

type messageSubscriber = message.Subscriber

// twice delivers every message of the inner subscriber twice: the first copy, and once that copy is
// acked, a second copy with the same UUID, payload, metadata and context. The original is acked after
// both copies were; a nack of either copy nacks the original. Close stops every delivery goroutine and
// closes the inner subscriber.
type twice struct {
	inner   message.Subscriber
	closing chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	// running counts live goroutines, checked to be zero after Close.
	running atomic.Int64
	// seconds counts second copies delivered.
	seconds *atomic.Int64
}

func newTwice(inner message.Subscriber, seconds *atomic.Int64) *twice {
	return &twice{inner: inner, closing: make(chan struct{}), seconds: seconds}
}

func (s *twice) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.inner.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	s.running.Add(1)
	go func() {
		defer s.running.Add(-1)
		defer s.wg.Done()
		var deliveries sync.WaitGroup
		defer func() {
			deliveries.Wait()
			close(out)
		}()
		for {
			select {
			case msg, ok := <-in:
				if !ok {
					return
				}
				deliveries.Add(1)
				s.running.Add(1)
				go func() {
					defer s.running.Add(-1)
					defer deliveries.Done()
					s.deliver(ctx, msg, out)
				}()
			case <-s.closing:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// deliver sends two copies one after the other and settles the original.
func (s *twice) deliver(ctx context.Context, orig *message.Message, out chan<- *message.Message) {
	for i := range 2 {
		cp := orig.Copy()
		cp.SetContext(orig.Context())
		select {
		case out <- cp:
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
		select {
		case <-cp.Acked():
			if i == 1 {
				s.seconds.Add(1)
			}
		case <-cp.Nacked():
			orig.Nack()
			return
		case <-s.closing:
			return
		case <-ctx.Done():
			return
		}
	}
	orig.Ack()
}

func (s *twice) Close() error {
	s.once.Do(func() { close(s.closing) })
	err := s.inner.Close()
	s.wg.Wait()
	return err
}

// twiceDecorator wraps every subscriber the router consumes from and remembers the wrappers.
type twiceDecorator struct {
	mu      sync.Mutex
	subs    []*twice
	kinds   map[string]int
	seconds atomic.Int64
}

func (d *twiceDecorator) decorate(kind, _ string, sub message.Subscriber) message.Subscriber {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.kinds == nil {
		d.kinds = map[string]int{}
	}
	d.kinds[kind]++
	w := newTwice(sub, &d.seconds)
	d.subs = append(d.subs, w)
	return w
}

// Scenario 1: every message on every topic is delivered twice. The job still completes with exact counts,
// and duplicates are absorbed.
func testDeliveredTwice(t *testing.T, c combo) {
	e := newEnv(t, c)
	e.cfg.Workers = 16
	n := c.twiceSubJobs
	typ := newCounting(t, "conformance-noop", 0)
	dec := &twiceDecorator{}
	en := startEngine(t, e, typ.registry, dec.decorate)
	start := time.Now()
	id := en.submit(typ.name, countInput{N: n})
	st := en.waitCompleted(id)
	t.Logf("%d sub-jobs, every message delivered twice: COMPLETED after %s (%s)", n, time.Since(start).Round(10*time.Millisecond), describe(st))
	// The statistics consumer, fed the same doubled log, ends with exact figures.
	sts := waitStatsEnded(t, en, id)
	if sts.Succeeded != int64(n) || sts.SubJobs.Count != int64(n) || sts.Failed != 0 || sts.Attempts != int64(n)+2 {
		t.Errorf("statistics with every event delivered twice: succeeded %d, durations counted %d, failed %d, attempts %d; want %d, %d, 0, %d (a first attempt per sub-job, plus steps 1 and 3)",
			sts.Succeeded, sts.SubJobs.Count, sts.Failed, sts.Attempts, n, n, n+2)
	}
	var completions int64
	for _, b := range sts.Throughput {
		completions += b.Completed
	}
	if completions != int64(n) {
		t.Errorf("throughput series counts %d completions, want %d", completions, n)
	}
	// Stop the engine first: copies still in flight are delivered or dropped, so the counts are final.
	en.stop()
	checkCounts(t, st, int64(n))
	if st.Job.Duplicates == 0 {
		t.Errorf("Duplicates = 0 although every report was delivered twice: %s", describe(st))
	}
	// Workers are at-least-once (the SDK's contract): a RunStep3 delivered twice may run twice, under the
	// same idempotency key, but never more often than it was delivered, and the job completes once.
	if runs := typ.step3Runs(id); runs < 1 || runs > 2 {
		t.Errorf("step 3 ran %d times, want 1 or 2 (its command was delivered twice)", runs)
	}
	if dec.kinds["log"] == 0 || dec.kinds["queue"] == 0 {
		t.Errorf("decorated subscribers by kind %v; want both log and queue", dec.kinds)
	}
	if dec.seconds.Load() == 0 {
		t.Errorf("no second copy was ever delivered: the decorator did not work")
	}
	t.Logf("second copies delivered: %d; sub-job executions: %d; decorated subscribers %v", dec.seconds.Load(), typ.subjobRuns(), dec.kinds)
	for i, s := range dec.subs {
		if r := s.running.Load(); r != 0 {
			t.Errorf("decorated subscriber %d has %d goroutines left after the service closed it", i, r)
		}
		select {
		case <-s.closing:
		default:
			t.Errorf("decorated subscriber %d was never closed by the service", i)
		}
	}
	_ = job.StateCompleted
}

// waitStatsEnded waits until the statistics projection has applied the job's terminal event.
func waitStatsEnded(t *testing.T, en *engine, id string) stats.Stats {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st, err := en.svc.Read.Stats.JobStats(context.Background(), id, "")
		if err == nil && st.JobsCompleted+st.JobsFailed+st.JobsCancelled == 1 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("statistics never saw job %s end (last: %+v, %v)", id, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
