package engine_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
	"github.com/jobmill/jobmill/service"
)

// stalled is a log subscription that never delivers anything: a consumer stuck for good.
type stalled struct {
	message.Subscriber
	once   sync.Once
	closed chan struct{}
}

func (s *stalled) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	ch := make(chan *message.Message)
	go func() {
		select {
		case <-ctx.Done():
		case <-s.closed:
		}
		close(ch)
	}()
	return ch, nil
}

func (s *stalled) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.Subscriber.Close()
}

// hangingReceiver is a webhook endpoint that never answers until the test ends.
func hangingReceiver(t *testing.T) (url string, requests func() int) {
	t.Helper()
	release := make(chan struct{})
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	return srv.URL, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func waitStats(t *testing.T, e *engine, id string) stats.Stats {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		st, err := e.svc.Read.Stats.JobStats(context.Background(), id, "")
		if err == nil && st.JobsCompleted == 1 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("statistics never saw job %s complete (last %+v, %v)", id, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A projection whose consumer is stuck, and a webhook receiver that never answers, hold up neither the
// manager nor the other projections: the job completes and the statistics and status view are complete.
func TestStalledNotifierHoldsUpNothingElse(t *testing.T) {
	url, _ := hangingReceiver(t)
	types := registry(t, synthetic.Definition(jobtype.Policy{}))
	e := startEngine(t, newPath(t), types, nil, func(o *service.Options) {
		o.DecorateSubscriber = func(kind, group string, sub message.Subscriber) message.Subscriber {
			if kind == "log" && group == "notifier" {
				return &stalled{Subscriber: sub, closed: make(chan struct{})}
			}
			return sub
		}
	})
	ctx := context.Background()
	if _, _, err := e.svc.Read.Webhooks.CreateWebhook(ctx, "acme", url, nil); err != nil {
		t.Fatal(err)
	}
	id := e.submit("acme", synthetic.Name, synthetic.Input{SubJobs: 500})
	e.waitCompleted(id)
	st := waitStats(t, e, id)
	if st.Succeeded != 500 || st.SubJobs.Count != 500 {
		t.Errorf("statistics: succeeded %d, durations %d; want 500 and 500", st.Succeeded, st.SubJobs.Count)
	}
	deadline := time.Now().Add(waitLimit)
	for {
		sum, err := e.svc.Read.Timeline.Job(ctx, id, "acme")
		if err == nil && sum.State == job.StateCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status view never showed the job completed: %+v %v", sum, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	lag, err := e.svc.ConsumerLag(ctx, "notifier")
	if err != nil {
		t.Fatal(err)
	}
	if lag == 0 {
		t.Fatal("the notifier's consumer group is not behind: the stall did not happen and the test proves nothing")
	}
}

func TestHangingWebhookReceiverHoldsUpNothing(t *testing.T) {
	url, requests := hangingReceiver(t)
	types := registry(t, synthetic.Definition(jobtype.Policy{}))
	e := startEngine(t, newPath(t), types, nil)
	ctx := context.Background()
	hook, _, err := e.svc.Read.Webhooks.CreateWebhook(ctx, "acme", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := e.submit("acme", synthetic.Name, synthetic.Input{SubJobs: 500})
	e.waitCompleted(id)
	if st := waitStats(t, e, id); st.Succeeded != 500 {
		t.Errorf("statistics: succeeded %d, want 500", st.Succeeded)
	}
	// The notifier recorded the job's notifications; the receiver got requests and answered none.
	deadline := time.Now().Add(waitLimit)
	for {
		ds, err := e.svc.Read.Webhooks.Deliveries(ctx, "acme", hook.ID, "", 50)
		if err != nil {
			t.Fatal(err)
		}
		completed := false
		for _, d := range ds {
			if d.State == notify.DeliveryDelivered {
				t.Fatalf("delivery %s marked delivered although the receiver never answered", d.ID)
			}
			completed = completed || d.Type == notify.TypeJobCompleted
		}
		if completed && requests() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries %+v, receiver requests %d: the job.completed notification was never recorded or tried", ds, requests())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
