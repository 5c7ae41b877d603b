package e2e

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
)

// projectionSnapshot is everything the statistics and status projections hold about one job.
type projectionSnapshot struct {
	Stats    stats.Stats
	Summary  timeline.Summary
	Timeline []timeline.Entry
	SubJobs  []timeline.SubJob
	Job      *job.Job
}

func snapshotProjections(t *testing.T, dbPath, id string) projectionSnapshot {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store, err := jobstore.NewSQLite(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	ss, err := jobstore.NewStatsStore(store)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := stats.New(ss)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := jobstore.NewTimelineStore(store)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := timeline.New(ts)
	if err != nil {
		t.Fatal(err)
	}
	var snap projectionSnapshot
	if snap.Job, err = store.GetJob(ctx, id); err != nil {
		t.Fatal(err)
	}
	if snap.Stats, err = sp.JobStats(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	if snap.Summary, err = tp.Job(ctx, id, ""); err != nil {
		t.Fatal(err)
	}
	for after := int64(0); ; {
		page, err := tp.Timeline(ctx, id, "", after, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		snap.Timeline = append(snap.Timeline, page...)
		after = page[len(page)-1].Pos
	}
	for after := int64(-1); ; {
		page, err := tp.SubJobs(ctx, id, "", "", after, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		snap.SubJobs = append(snap.SubJobs, page...)
		after = page[len(page)-1].Index
	}
	return snap
}

// scrape reads /metrics into metric families.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "|" + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[key+"|count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestProjectionsLiveMetricsAndRebuild runs a 10,000-sub-job job with failures and double reports on the
// real binary, checks /metrics and the projections against the job, then rebuilds both projections from
// the log and checks they equal what was built live.
func TestProjectionsLiveMetricsAndRebuild(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "jobmill.db")
	env := baseEnv("JOBMILL_OUTBOX_DIR="+filepath.Join(dir, "outbox"), "JOBMILL_LOG_LEVEL=info", "JOBMILL_SQLITE_PATH="+dbPath)
	srv := startServe(t, "serve", dir, env, "--listen", "127.0.0.1:0")
	addr := srv.addr(t)

	res := runCLI(t, dir, env, "submit", "--type", "synthetic", "--wait",
		"--input", `{"subjobs":10000,"failure_rate":0.02,"duplicate_rate":0.05,"seed":7}`)
	if res.code != 0 {
		t.Fatalf("submit --wait exited %d\n%s", res.code, res.stderr)
	}
	id := strings.TrimSpace(strings.Split(strings.TrimSpace(res.stdout), "\n")[0])

	// The projections run behind the manager; wait until both consumer groups have read everything.
	var m map[string]float64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m = scrape(t, addr)
		if m["jobmill_consumer_lag_messages|consumer=stats|topic=jobmill.events"] == 0 &&
			m["jobmill_consumer_lag_messages|consumer=status|topic=jobmill.events"] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projections still lag after 2 minutes: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for key, want := range map[string]func(float64) bool{
		"jobmill_jobs|state=COMPLETED":                                                 func(v float64) bool { return v == 1 },
		"jobmill_jobs|state=STEP2_RUNNING":                                             func(v float64) bool { return v == 0 },
		"jobmill_subjobs_in_flight":                                                    func(v float64) bool { return v == 0 },
		"jobmill_subjobs_finished_total|outcome=succeeded":                             func(v float64) bool { return v == 10000 },
		"jobmill_fanin_latency_seconds|count":                                          func(v float64) bool { return v == 1 },
		"jobmill_dedup_hits_total|kind=duplicate":                                      func(v float64) bool { return v > 0 },
		"jobmill_consumer_lag_messages|consumer=manager|topic=jobmill.events":          func(v float64) bool { return v == 0 },
		"jobmill_consumer_lag_messages|consumer=workers|topic=jobmill.work.RunSubJobs": func(v float64) bool { return v == 0 },
		// At least one report message per command, plus the manager's other events.
		"jobmill_router_handler_execution_time_seconds|handler_name=manager|success=true|count": func(v float64) bool { return v > float64(10000/(job.Policy{}).CommandSize(10000)) },
		"jobmill_stats_subjobs|outcome=succeeded|type=synthetic":                                func(v float64) bool { return v == 10000 },
		"jobmill_stats_subjob_duration_seconds|quantile=0.99|type=synthetic":                    func(v float64) bool { return v >= 0 },
	} {
		if v, ok := m[key]; !ok || !want(v) {
			t.Errorf("%s = %v (present %v): implausible after the run", key, v, ok)
		}
	}
	srv.terminate(t)

	live := snapshotProjections(t, dbPath, id)
	j := live.Job
	if j.State != job.StateCompleted {
		t.Fatalf("job ended %s: %s", j.State, j.Error)
	}
	st := live.Stats
	if st.Succeeded != j.Succeeded || st.Failed != j.Failed || st.Retries != j.Retries || st.Duplicates != j.Duplicates ||
		st.Total != j.Total || st.SubJobs.Count != j.Succeeded {
		t.Errorf("statistics %+v disagree with the job's counters %+v", st, j)
	}
	if j.Duplicates == 0 || j.Retries == 0 || len(st.TopErrors) == 0 {
		t.Errorf("the run had no duplicates, retries or errors to count (duplicates %d, retries %d, errors %v)", j.Duplicates, j.Retries, st.TopErrors)
	}
	succeeded := 0
	for _, s := range live.SubJobs {
		if s.State == job.SubJobSucceeded {
			succeeded++
		}
	}
	if int64(succeeded) != j.Succeeded || live.Summary.State != job.StateCompleted {
		t.Errorf("status view: %d sub-jobs SUCCEEDED and state %s, want %d and COMPLETED", succeeded, live.Summary.State, j.Succeeded)
	}

	// jobmill status shows the projections beside the job's own state.
	if st := jobStatus(t, dir, env, dbPath, id); st.State != "COMPLETED" {
		t.Errorf("status --json: state %s", st.State)
	}
	if res := runCLI(t, dir, env, "status", "--json", id); !strings.Contains(res.stdout, `"subjob_durations"`) ||
		!strings.Contains(res.stdout, `"timeline"`) || !strings.Contains(res.stdout, `"kind": "JobCompleted"`) {
		t.Errorf("status --json lacks the statistics or the timeline:\n%s", res.stdout)
	}
	for _, name := range []string{"stats", "status"} {
		if res := runCLI(t, dir, env, "projections", "rebuild", "--name", name); res.code != 0 {
			t.Fatalf("projections rebuild --name %s exited %d\n%s", name, res.code, res.stderr)
		}
	}
	rebuilt := snapshotProjections(t, dbPath, id)
	if !reflect.DeepEqual(live.Stats, rebuilt.Stats) {
		t.Errorf("rebuilt statistics differ from the live ones:\nlive    %+v\nrebuilt %+v", live.Stats, rebuilt.Stats)
	}
	if !reflect.DeepEqual(live.Summary, rebuilt.Summary) || !reflect.DeepEqual(live.SubJobs, rebuilt.SubJobs) {
		t.Errorf("rebuilt status view differs from the live one")
	}
	if !reflect.DeepEqual(live.Timeline, rebuilt.Timeline) {
		t.Errorf("rebuilt timeline differs from the live one (%d vs %d entries)", len(live.Timeline), len(rebuilt.Timeline))
	}
	if res := runCLI(t, dir, env, "projections", "rebuild", "--name", "notifier"); res.code == 0 || !strings.Contains(res.stderr, "must be one of") {
		t.Errorf("rebuilding the notifier was not refused: %d %s", res.code, res.stderr)
	}
}
