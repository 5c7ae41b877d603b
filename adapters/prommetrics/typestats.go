package prommetrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TypeStats are the statistics projection's figures for one job type, over every tenant.
type TypeStats struct {
	Type                          string
	Succeeded, Failed             int64
	Retries, TimedOut, Duplicates int64
	// Durations of sub-jobs: count and quantiles from the projection's sketches.
	Durations     int64
	P50, P95, P99 time.Duration
}

// TypeStatsSource reads the statistics of every job type.
type TypeStatsSource func(ctx context.Context) ([]TypeStats, error)

// RegisterTypeStats exposes the statistics projection per job type, read at scrape time (bounded by the
// query timeout; a failed read leaves these series out of that scrape).
func (m *Metrics) RegisterTypeStats(src TypeStatsSource, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	return m.registry.Register(&typeStatsCollector{src: src, timeout: timeout})
}

var (
	typeDurationDesc = prometheus.NewDesc(Namespace+"_stats_subjob_duration_seconds",
		"Sub-job attempt durations per job type, from the statistics projection's sketches (1% relative accuracy).",
		[]string{"type", "quantile"}, nil)
	typeSubJobsDesc = prometheus.NewDesc(Namespace+"_stats_subjobs",
		"Sub-jobs with a final outcome per job type and outcome, from the statistics projection.",
		[]string{"type", "outcome"}, nil)
	typeRetriesDesc = prometheus.NewDesc(Namespace+"_stats_retries",
		"Attempts started after a failure or time-out, per job type, from the statistics projection.", []string{"type"}, nil)
	typeTimedOutDesc = prometheus.NewDesc(Namespace+"_stats_timed_out",
		"Attempts that timed out, per job type, from the statistics projection.", []string{"type"}, nil)
	typeDuplicatesDesc = prometheus.NewDesc(Namespace+"_stats_duplicates",
		"Duplicate reports absorbed, per job type, from the statistics projection.", []string{"type"}, nil)
)

type typeStatsCollector struct {
	src     TypeStatsSource
	timeout time.Duration
}

func (c *typeStatsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{typeDurationDesc, typeSubJobsDesc, typeRetriesDesc, typeTimedOutDesc, typeDuplicatesDesc} {
		ch <- d
	}
}

func (c *typeStatsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	all, err := c.src(ctx)
	if err != nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range all {
		if s.Durations > 0 {
			gauge(typeDurationDesc, s.P50.Seconds(), s.Type, "0.5")
			gauge(typeDurationDesc, s.P95.Seconds(), s.Type, "0.95")
			gauge(typeDurationDesc, s.P99.Seconds(), s.Type, "0.99")
		}
		gauge(typeSubJobsDesc, float64(s.Succeeded), s.Type, outcomeSucceeded)
		gauge(typeSubJobsDesc, float64(s.Failed), s.Type, outcomeFailed)
		gauge(typeRetriesDesc, float64(s.Retries), s.Type)
		gauge(typeTimedOutDesc, float64(s.TimedOut), s.Type)
		gauge(typeDuplicatesDesc, float64(s.Duplicates), s.Type)
	}
}
