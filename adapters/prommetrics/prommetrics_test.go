package prommetrics_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/metrics"
	"github.com/jobmill/jobmill/adapters/prommetrics"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/job"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a real SQLite job store in a new file.
func openStore(t *testing.T) (*sqlite.DB, *jobstore.SQLite) {
	t.Helper()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "jobmill.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	st, err := jobstore.NewSQLite(testCtx(t), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db, st
}

// addJob submits a job (its JobStarted goes to the log) and moves it to state with inFlight sub-jobs.
func addJob(t *testing.T, st job.Store, id string, state job.State, inFlight int64) {
	t.Helper()
	j, fx, err := job.New(id, "acme", "invoices", []byte(`{}`), job.DefaultPolicy(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(testCtx(t), func(ctx context.Context, tx job.Tx) error {
		if _, err := tx.CreateJob(ctx, j, ""); err != nil {
			return err
		}
		if err := tx.Publish(ctx, fx); err != nil {
			return err
		}
		if state == job.StatePending {
			return nil
		}
		j.State, j.InFlight = state, inFlight
		return tx.SaveJob(ctx, j)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// series finds the metric of a family whose labels include labels; nil if there is none.
func series(families map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	mf := families[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is the value of a gauge or counter series, NaN when the series is missing.
func value(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := series(families, name, labels)
	switch {
	case m == nil:
		return math.NaN()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

type check struct {
	name   string
	labels map[string]string
	want   float64
}

func expect(t *testing.T, families map[string]*dto.MetricFamily, checks []check) {
	t.Helper()
	for _, c := range checks {
		if got := value(families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

func lagOf(consumer, topic string) map[string]string {
	return map[string]string{"consumer": consumer, "topic": topic}
}

func TestScrapeReportsEveryMetric(t *testing.T) {
	db, st := openStore(t)
	jobs := []struct {
		id       string
		state    job.State
		inFlight int64
	}{
		{"pending", job.StatePending, 0},
		{"step1", job.StateStep1Running, 0},
		{"step2-a", job.StateStep2Running, 7},
		{"step2-b", job.StateStep2Running, 5},
		{"done-1", job.StateCompleted, 0},
		{"done-2", job.StateCompleted, 0},
		{"failed", job.StateFailed, 0},
	}
	for _, j := range jobs {
		addJob(t, st, j.id, j.state, j.inFlight)
	}
	queuePub := sqlite.NewQueuePublisher(db)
	subJobTopic := messaging.WorkTopic("RunSubJobs")
	for range 3 {
		if err := queuePub.Publish(subJobTopic, message.NewMessage(watermill.NewUUID(), []byte(`{}`))); err != nil {
			t.Fatal(err)
		}
	}

	m, err := prommetrics.New(prommetrics.Options{
		Store: st,
		Lag: map[string]metrics.LagSource{
			"log": func(ctx context.Context) ([]metrics.Lag, error) {
				return sqlite.LogLag(ctx, db, messaging.EventsTopic, "manager", "stats")
			},
			// Reports a series "log" already reports: the first source by name keeps it.
			"log-again": func(context.Context) ([]metrics.Lag, error) {
				return []metrics.Lag{{Consumer: "manager", Topic: messaging.EventsTopic, Messages: 999}}, nil
			},
			"queue": func(ctx context.Context) ([]metrics.Lag, error) {
				return sqlite.QueueLag(ctx, db, messaging.WorkTopics()...)
			},
			"broken": func(context.Context) ([]metrics.Lag, error) {
				return []metrics.Lag{{Consumer: "ghost", Topic: "nowhere", Messages: 1}}, errors.New("broker unreachable")
			},
			"hung": func(ctx context.Context) ([]metrics.Lag, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
		},
		QueryTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}

	// The manager's observations go through the recorder, which keeps its own figures and feeds Prometheus.
	rec := metrics.NewRecorder()
	rec.AddSink(m)
	rec.SubJobsFinished("step2-a", 4, 0)
	rec.SubJobsFinished("done-1", 3, 2)
	rec.Step2Closed("done-1", 20*time.Millisecond)
	rec.Step2Closed("done-2", 3*time.Second)
	rec.Absorbed("step2-a", job.Duplicate)
	rec.Absorbed("step2-a", job.Duplicate)
	rec.Absorbed("done-1", job.Late)
	rec.Absorbed("done-1", job.Applied) // not a dedup hit
	rec.JobEnded("done-1", job.StateCompleted)
	rec.JobEnded("done-2", job.StateCompleted)
	rec.JobEnded("failed", job.StateFailed)

	if s, f := rec.SubJobCounts(); s != 7 || f != 2 {
		t.Errorf("recorder: %d succeeded, %d failed; want 7, 2", s, f)
	}
	if d, l := rec.AbsorbedCounts(); d != 2 || l != 1 {
		t.Errorf("recorder: %d duplicates, %d late; want 2, 1", d, l)
	}

	fams := scrape(t, m.Handler())
	n := float64(len(jobs))
	expect(t, fams, []check{
		{"jobmill_jobs", map[string]string{"state": "PENDING"}, 1},
		{"jobmill_jobs", map[string]string{"state": "STEP1_RUNNING"}, 1},
		{"jobmill_jobs", map[string]string{"state": "STEP2_RUNNING"}, 2},
		{"jobmill_jobs", map[string]string{"state": "STEP3_RUNNING"}, 0},
		{"jobmill_jobs", map[string]string{"state": "COMPLETED"}, 2},
		{"jobmill_jobs", map[string]string{"state": "FAILED"}, 1},
		{"jobmill_jobs", map[string]string{"state": "CANCELLED"}, 0},
		{"jobmill_subjobs_in_flight", nil, 12},
		{"jobmill_subjobs_finished_total", map[string]string{"outcome": "succeeded"}, 7},
		{"jobmill_subjobs_finished_total", map[string]string{"outcome": "failed"}, 2},
		{"jobmill_dedup_hits_total", map[string]string{"kind": "duplicate"}, 2},
		{"jobmill_dedup_hits_total", map[string]string{"kind": "late"}, 1},
		{"jobmill_jobs_ended_total", map[string]string{"state": "COMPLETED"}, 2},
		{"jobmill_jobs_ended_total", map[string]string{"state": "FAILED"}, 1},
		{"jobmill_jobs_ended_total", map[string]string{"state": "CANCELLED"}, 0},
		// One JobStarted per job, read by nobody yet.
		{"jobmill_consumer_lag_messages", lagOf("manager", messaging.EventsTopic), n},
		{"jobmill_consumer_lag_messages", lagOf("stats", messaging.EventsTopic), n},
		{"jobmill_consumer_lag_messages", lagOf(metrics.WorkQueueConsumer, subJobTopic), 3},
		{"jobmill_consumer_lag_messages", lagOf(metrics.WorkQueueConsumer, messaging.WorkTopic("RunStep1")), 0},
		{"jobmill_metrics_source_up", map[string]string{"source": "store"}, 1},
		{"jobmill_metrics_source_up", map[string]string{"source": "log"}, 1},
		{"jobmill_metrics_source_up", map[string]string{"source": "log-again"}, 1},
		{"jobmill_metrics_source_up", map[string]string{"source": "queue"}, 1},
		{"jobmill_metrics_source_up", map[string]string{"source": "broken"}, 0},
		{"jobmill_metrics_source_up", map[string]string{"source": "hung"}, 0},
	})
	if got := len(fams["jobmill_consumer_lag_messages"].GetMetric()); got != 2+len(messaging.WorkTopics()) {
		t.Errorf("%d lag series, want %d: a failed source's partial answer or a duplicate slipped in", got, 2+len(messaging.WorkTopics()))
	}

	h := series(fams, "jobmill_fanin_latency_seconds", nil).GetHistogram()
	if h.GetSampleCount() != 2 || math.Abs(h.GetSampleSum()-3.02) > 1e-9 {
		t.Errorf("fan-in histogram: %d samples summing to %v, want 2 summing to 3.02", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 3:
			want = 2
		case b.GetUpperBound() >= 0.02:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("fan-in bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total", "promhttp_metric_handler_requests_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}

	// Watermill's router metrics: a router on the same log, consuming it as the manager group and
	// forwarding each event.
	const forwarded = "test.forwarded"
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.InstrumentRouter(router)
	sub, err := sqlite.NewLogSubscriber(db, "manager", sqlite.LogSubscriberConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := sqlite.NewLogPublisher(db, nil)
	if err != nil {
		t.Fatal(err)
	}
	var handled atomic.Int64
	router.AddHandler("forward", messaging.EventsTopic, sub, forwarded, pub, func(msg *message.Message) ([]*message.Message, error) {
		out := message.NewMessage(watermill.NewUUID(), msg.Payload)
		// Joins the batch transaction the subscriber holds, instead of waiting for the write connection.
		out.SetContext(msg.Context())
		handled.Add(1)
		return []*message.Message{out}, nil
	})
	runCtx, stop := context.WithCancel(testCtx(t))
	var running sync.WaitGroup
	running.Go(func() {
		if err := router.Run(runCtx); err != nil {
			t.Error(err)
		}
	})
	defer func() {
		stop()
		running.Wait()
	}()

	handler := map[string]string{"handler_name": "forward"}
	deadline := time.Now().Add(20 * time.Second)
	for {
		fams = scrape(t, m.Handler())
		caughtUp := value(fams, "jobmill_consumer_lag_messages", lagOf("manager", messaging.EventsTopic)) == 0
		received := value(fams, "jobmill_router_subscriber_messages_received_total",
			map[string]string{"handler_name": "forward", "acked": "acked"}) == n
		if caughtUp && received {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router did not catch up: handled %d of %v events; lag %v, received %v", handled.Load(), n,
				value(fams, "jobmill_consumer_lag_messages", lagOf("manager", messaging.EventsTopic)),
				value(fams, "jobmill_router_subscriber_messages_received_total", handler))
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect(t, fams, []check{
		// The other group still has everything to read.
		{"jobmill_consumer_lag_messages", lagOf("stats", messaging.EventsTopic), n},
	})
	if got := series(fams, "jobmill_router_handler_execution_time_seconds", map[string]string{"handler_name": "forward", "success": "true"}); got.GetHistogram().GetSampleCount() != uint64(n) {
		t.Errorf("handler execution histogram counted %d runs, want %v", got.GetHistogram().GetSampleCount(), n)
	}
	var published uint64
	for _, s := range fams["jobmill_router_publish_time_seconds"].GetMetric() {
		published += s.GetHistogram().GetSampleCount()
	}
	if published != uint64(n) {
		t.Errorf("publish histogram counted %d publishes, want %v", published, n)
	}
}

// A source that ignores its deadline is abandoned at the timeout and not asked again until it returns, so
// a hung backend cannot pile up queries scrape after scrape.
func TestHungSourceIsAskedOnce(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int64
	m, err := prommetrics.New(prommetrics.Options{
		Lag: map[string]metrics.LagSource{
			"stuck": func(context.Context) ([]metrics.Lag, error) {
				calls.Add(1)
				<-release
				return []metrics.Lag{{Consumer: "manager", Topic: "t", Messages: 4}}, nil
			},
		},
		QueryTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	up := map[string]string{"source": "stuck"}
	for i := range 3 {
		fams := scrape(t, m.Handler())
		if got := value(fams, "jobmill_metrics_source_up", up); got != 0 {
			t.Fatalf("scrape %d: up = %v while the source hangs, want 0", i, got)
		}
		if fams["jobmill_consumer_lag_messages"] != nil {
			t.Fatalf("scrape %d: lag reported while the source hangs", i)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Fatalf("the hung source was asked %d times, want once", c)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := scrape(t, m.Handler())
		if value(fams, "jobmill_metrics_source_up", up) == 1 {
			if got := value(fams, "jobmill_consumer_lag_messages", lagOf("manager", "t")); got != 4 {
				t.Fatalf("lag %v once the source answers, want 4", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the source was never asked again after it returned")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewRejectsBadSources(t *testing.T) {
	for name, lag := range map[string]map[string]metrics.LagSource{
		"unnamed":          {"": func(context.Context) ([]metrics.Lag, error) { return nil, nil }},
		"nil function":     {"log": nil},
		"the store's name": {"store": func(context.Context) ([]metrics.Lag, error) { return nil, nil }},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := prommetrics.New(prommetrics.Options{Lag: lag}); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestAbsentStoreAndLagLeaveTheirMetricsOut(t *testing.T) {
	m, err := prommetrics.New(prommetrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, m.Handler())
	for _, name := range []string{"jobmill_jobs", "jobmill_subjobs_in_flight", "jobmill_consumer_lag_messages", "jobmill_metrics_source_up"} {
		if fams[name] != nil {
			t.Errorf("%s reported without a source", name)
		}
	}
	for _, name := range []string{"jobmill_subjobs_finished_total", "jobmill_dedup_hits_total", "jobmill_jobs_ended_total", "jobmill_fanin_latency_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s missing before any observation", name)
		}
	}
}
