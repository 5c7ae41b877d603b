package prommetrics_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/prommetrics"
)

func TestTypeStatsAreExposedPerType(t *testing.T) {
	m, err := prommetrics.New(prommetrics.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fail := false
	err = m.RegisterTypeStats(func(context.Context) ([]prommetrics.TypeStats, error) {
		if fail {
			return nil, errors.New("store away")
		}
		return []prommetrics.TypeStats{
			{Type: "invoices", Succeeded: 990, Failed: 10, Retries: 25, TimedOut: 3, Duplicates: 7,
				Durations: 990, P50: 20 * time.Millisecond, P95: 80 * time.Millisecond, P99: 150 * time.Millisecond},
			{Type: "idle"},
		}, nil
	}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f := scrape(t, m.Handler())
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"jobmill_stats_subjobs", map[string]string{"type": "invoices", "outcome": "succeeded"}, 990},
		{"jobmill_stats_subjobs", map[string]string{"type": "invoices", "outcome": "failed"}, 10},
		{"jobmill_stats_retries", map[string]string{"type": "invoices"}, 25},
		{"jobmill_stats_timed_out", map[string]string{"type": "invoices"}, 3},
		{"jobmill_stats_duplicates", map[string]string{"type": "invoices"}, 7},
		{"jobmill_stats_subjob_duration_seconds", map[string]string{"type": "invoices", "quantile": "0.5"}, 0.02},
		{"jobmill_stats_subjob_duration_seconds", map[string]string{"type": "invoices", "quantile": "0.99"}, 0.15},
		{"jobmill_stats_subjobs", map[string]string{"type": "idle", "outcome": "succeeded"}, 0},
	} {
		if got := value(f, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if s := series(f, "jobmill_stats_subjob_duration_seconds", map[string]string{"type": "idle"}); s != nil {
		t.Errorf("a type without durations has quantiles: %v", s)
	}
	fail = true
	if f := scrape(t, m.Handler()); f["jobmill_stats_subjobs"] != nil || f["go_goroutines"] == nil {
		t.Errorf("with the statistics unreadable the scrape should leave their series out and serve the rest")
	}
}
