// Package prommetrics exports jobmill's metrics in the Prometheus format: Watermill's router metrics, the
// engine's own (jobs by state, sub-jobs in flight, sub-job outcomes, fan-in latency, absorbed reports,
// jobs ended), consumer lag per consumer and topic, and the Go runtime and process collectors.
//
// Two kinds of figures meet here. Counters and the fan-in histogram count what this process's manager
// decided (fed through metrics.Recorder, as a metrics.Sink), so with several manager processes
// Prometheus sums them. Jobs by state, sub-jobs in flight and consumer lag are read at scrape time from
// the job store and the transports, so every process that serves them reports the same global values.
package prommetrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	wmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/jobmill/jobmill/adapters/metrics"
	"github.com/jobmill/jobmill/app/job"
)

// Namespace prefixes every metric of jobmill's own: jobmill_jobs, jobmill_router_… .
const Namespace = "jobmill"

// RouterSubsystem is where Watermill's router metrics go: jobmill_router_handler_execution_time_seconds,
// jobmill_router_subscriber_messages_received_total, jobmill_router_publish_time_seconds.
const RouterSubsystem = "router"

// DefaultQueryTimeout bounds each store or lag query of a scrape when Options leaves it zero.
const DefaultQueryTimeout = 5 * time.Second

// StoreStats is what the scrape reads from the job store; both job stores (jobstore.SQLite, jobstore.SQL)
// implement it.
type StoreStats interface {
	// JobCountsByState counts jobs per state; states without jobs may be absent.
	JobCountsByState(ctx context.Context) (map[job.State]int64, error)
	// SubJobsInFlight is the number of sub-jobs dispatched and not finished, over the jobs in step 2.
	SubJobsInFlight(ctx context.Context) (int64, error)
}

// Options configure New. Every field is optional.
type Options struct {
	// Store feeds jobmill_jobs and jobmill_subjobs_in_flight; nil leaves them out.
	Store StoreStats
	// Lag feeds jobmill_consumer_lag_messages, by source name ("log", "queue", "outbox"): the name labels
	// jobmill_metrics_source_up. When two sources report the same consumer and topic, the first source in
	// name order wins.
	Lag map[string]metrics.LagSource
	// QueryTimeout bounds each store or lag query of a scrape; a source that does not answer in time is
	// reported down and left out of that scrape. Default DefaultQueryTimeout.
	QueryTimeout time.Duration
	// Logger receives a line when a source starts or stops failing (not one per scrape). Default
	// slog.Default().
	Logger *slog.Logger
}

// Metrics is the registry behind /metrics. It is a metrics.Sink: add it to the manager's
// metrics.Recorder, and the recorder's observations feed the counters and the histogram.
type Metrics struct {
	registry *prometheus.Registry
	handler  http.Handler

	fanIn    prometheus.Histogram
	dedup    *prometheus.CounterVec
	finished *prometheus.CounterVec
	ended    *prometheus.CounterVec
}

var _ metrics.Sink = (*Metrics)(nil)

// New builds the registry with the Go and process collectors, the engine's metrics and the scrape-time
// collector of opts.
func New(opts Options) (*Metrics, error) {
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	for name, src := range opts.Lag {
		if name == "" || src == nil {
			return nil, fmt.Errorf("prommetrics: lag source %q: a name and a function are required", name)
		}
		if name == storeSource {
			return nil, fmt.Errorf("prommetrics: lag source name %q is taken by the job store", name)
		}
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		fanIn: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace,
			Name:      "fanin_latency_seconds",
			Help:      "Time from consuming the sub-job outcome that closed step 2 to the commit of Step2Completed.",
			Buckets:   []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		dedup: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "dedup_hits_total",
			Help:      "Worker reports absorbed without effect: kind duplicate (already applied) or late (step or job already closed).",
		}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "subjobs_finished_total",
			Help:      "Sub-jobs whose outcome became final, by outcome (succeeded, failed); rate() is the completion rate.",
		}, []string{"outcome"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "jobs_ended_total",
			Help:      "Jobs that reached a terminal state, by state.",
		}, []string{"state"}),
	}
	// Every label value exists from the start, so rate() and absent() work before the first event.
	for _, o := range []job.Outcome{job.Duplicate, job.Late} {
		m.dedup.WithLabelValues(o.String())
	}
	m.finished.WithLabelValues(outcomeSucceeded)
	m.finished.WithLabelValues(outcomeFailed)
	for _, st := range []job.State{job.StateCompleted, job.StateFailed, job.StateCancelled} {
		m.ended.WithLabelValues(string(st))
	}
	err := errors.Join(
		reg.Register(collectors.NewGoCollector()),
		reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})),
		reg.Register(m.fanIn),
		reg.Register(m.dedup),
		reg.Register(m.finished),
		reg.Register(m.ended),
		reg.Register(newScrapeCollector(opts)),
	)
	if err != nil {
		return nil, fmt.Errorf("prommetrics: register collectors: %w", err)
	}
	m.handler = promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slogPrinter{opts.Logger},
		// A collector that fails must not take the other metrics down with it.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      reg,
	}))
	return m, nil
}

// Registry is the registry behind Handler, for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus exposition formats: mount it at /metrics.
func (m *Metrics) Handler() http.Handler { return m.handler }

// InstrumentRouter adds Watermill's router metrics to r: a middleware timing every handler, and
// decorators counting what its subscribers receive and timing what its handlers publish. Call it
// before r runs; several routers may share one Metrics.
func (m *Metrics) InstrumentRouter(r *message.Router) {
	wmetrics.NewPrometheusMetricsBuilder(m.registry, Namespace, RouterSubsystem).AddPrometheusRouterMetrics(r)
}

const (
	outcomeSucceeded = "succeeded"
	outcomeFailed    = "failed"
)

// Step2Closed implements metrics.Sink.
func (m *Metrics) Step2Closed(_ string, fanIn time.Duration) { m.fanIn.Observe(fanIn.Seconds()) }

// Absorbed implements metrics.Sink.
func (m *Metrics) Absorbed(_ string, o job.Outcome) {
	if o == job.Duplicate || o == job.Late {
		m.dedup.WithLabelValues(o.String()).Inc()
	}
}

// JobEnded implements metrics.Sink.
func (m *Metrics) JobEnded(_ string, state job.State) { m.ended.WithLabelValues(string(state)).Inc() }

// SubJobsFinished implements metrics.Sink.
func (m *Metrics) SubJobsFinished(_ string, succeeded, failed int64) {
	if succeeded > 0 {
		m.finished.WithLabelValues(outcomeSucceeded).Add(float64(succeeded))
	}
	if failed > 0 {
		m.finished.WithLabelValues(outcomeFailed).Add(float64(failed))
	}
}

// storeSource names the job store in jobmill_metrics_source_up.
const storeSource = "store"

// allStates are reported even without jobs, so a state that empties reads 0 instead of vanishing.
var allStates = []job.State{job.StatePending, job.StateStep1Running, job.StateStep2Running, job.StateStep3Running,
	job.StateCompleted, job.StateFailed, job.StateCancelled}

// scrapeCollector reads the store and the lag sources at each scrape, concurrently, each under the
// query timeout.
type scrapeCollector struct {
	jobs, inFlight, lag, up *prometheus.Desc

	store    StoreStats // nil: no store figures
	storeSrc *source
	lags     []lagSource // in name order
	timeout  time.Duration
	logger   *slog.Logger
}

type lagSource struct {
	*source
	query metrics.LagSource
}

// source is one thing a scrape asks. running keeps a source that has not answered a previous scrape
// from being asked again meanwhile, so a hung broker costs one goroutine, not one per scrape. failing
// remembers the last outcome, so that only changes are logged.
type source struct {
	name    string
	running atomic.Bool
	failing atomic.Bool
}

func newScrapeCollector(opts Options) *scrapeCollector {
	c := &scrapeCollector{
		jobs: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "jobs"),
			"Jobs in each state, read from the job store at scrape time.", []string{"state"}, nil),
		inFlight: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "subjobs_in_flight"),
			"Sub-jobs dispatched and not yet finished, over every job in step 2, read from the job store at scrape time.", nil, nil),
		lag: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "consumer_lag_messages"),
			"Messages a consumer (a consumer group of the log, or the workers of a work queue) has still to handle on a topic, read from the transport at scrape time.",
			[]string{"consumer", "topic"}, nil),
		up: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "metrics_source_up"),
			"1 if the source answered this scrape's query in time, 0 if it failed or timed out.", []string{"source"}, nil),
		store:    opts.Store,
		storeSrc: &source{name: storeSource},
		timeout:  opts.QueryTimeout,
		logger:   opts.Logger,
	}
	names := make([]string, 0, len(opts.Lag))
	for name := range opts.Lag {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		c.lags = append(c.lags, lagSource{source: &source{name: name}, query: opts.Lag[name]})
	}
	return c
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	if c.store != nil {
		ch <- c.jobs
		ch <- c.inFlight
	}
	if len(c.lags) > 0 {
		ch <- c.lag
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	var wg sync.WaitGroup
	if c.store != nil {
		wg.Go(func() {
			var (
				counts   map[job.State]int64
				inFlight int64
			)
			ok := c.ask(ch, c.storeSrc, func(ctx context.Context) (err error) {
				if counts, err = c.store.JobCountsByState(ctx); err != nil {
					return err
				}
				inFlight, err = c.store.SubJobsInFlight(ctx)
				return err
			})
			if !ok {
				return
			}
			for _, st := range allStates {
				ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(counts[st]), string(st))
			}
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(inFlight))
		})
	}
	results := make([][]metrics.Lag, len(c.lags))
	for i, src := range c.lags {
		wg.Go(func() {
			var lags []metrics.Lag
			if c.ask(ch, src.source, func(ctx context.Context) (err error) {
				lags, err = src.query(ctx)
				return err
			}) {
				results[i] = lags
			}
		})
	}
	wg.Wait()

	// Two sources reporting one series would fail the whole scrape: keep the first.
	type series struct{ consumer, topic string }
	seen := map[series]string{}
	for i, lags := range results {
		for _, l := range lags {
			key := series{l.Consumer, l.Topic}
			if first, dup := seen[key]; dup {
				c.logger.Warn("metrics: consumer lag reported by two sources; keeping the first",
					"consumer", l.Consumer, "topic", l.Topic, "kept", first, "dropped", c.lags[i].name)
				continue
			}
			seen[key] = c.lags[i].name
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, float64(l.Messages), l.Consumer, l.Topic)
		}
	}
}

// ask runs query under the timeout, sends the source's up gauge, logs when the source starts or stops
// failing, and reports whether the query succeeded (only then may the caller read what it wrote).
func (c *scrapeCollector) ask(ch chan<- prometheus.Metric, src *source, query func(ctx context.Context) error) bool {
	err := c.run(src, query)
	up := 1.0
	if err != nil {
		up = 0
		if !src.failing.Swap(true) {
			c.logger.Warn("metrics: a source failed; its metrics are left out until it answers", "source", src.name, "err", err)
		}
	} else if src.failing.Swap(false) {
		c.logger.Info("metrics: a source answers again", "source", src.name)
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, src.name)
	return err == nil
}

// run calls query with a context that ends at the timeout. A query that overruns is abandoned, not
// waited for, and the source is skipped until it returns.
func (c *scrapeCollector) run(src *source, query func(ctx context.Context) error) error {
	if !src.running.CompareAndSwap(false, true) {
		return errors.New("the previous query has not returned yet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	done := make(chan error, 1)
	go func() {
		defer src.running.Store(false)
		defer cancel()
		done <- query(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no answer within %v", c.timeout)
	}
}

// slogPrinter gives promhttp's error log to slog.
type slogPrinter struct{ logger *slog.Logger }

func (p slogPrinter) Println(v ...any) {
	p.logger.Error("metrics: serving /metrics: " + fmt.Sprint(v...))
}
