package stats_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/stats/statstest"
)

// tb is what the helpers need of a *testing.T or a *rapid.T.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func newProjection(t tb) (*stats.Projection, *memStore) {
	t.Helper()
	store := newMemStore()
	p, err := stats.New(store)
	if err != nil {
		t.Fatal(err)
	}
	return p, store
}

func apply(t tb, p *stats.Projection, events ...statstest.Event) {
	t.Helper()
	for _, e := range events {
		if err := p.Apply(context.Background(), e.ID, e.Message); err != nil {
			t.Fatalf("apply %T: %v", e.Message, err)
		}
	}
}

func jobStats(t tb, p *stats.Projection, jobID string) stats.Stats {
	t.Helper()
	st, err := p.JobStats(context.Background(), jobID, "")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

var start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fullRun exercises every rule: failures, failures for good, time-outs with late reports, duplicate
// reports, a step 1 retry.
func fullRun(id, tenant, typ string, n int) statstest.Run {
	return statstest.Run{JobID: id, Tenant: tenant, Type: typ, Start: start, SubJobs: n,
		FailFirstEvery: 10, FailEvery: 50, TimeOutEvery: 25, DuplicateEvery: 7, Step1Retry: true}
}

// expected is what the statistics of a job must say, worked out from its events without the projection.
type expected struct {
	durations   []time.Duration // of the success that counts, per sub-job
	perSecond   map[int64]int64
	errors      map[string]int64
	attempts    int64
	steps       [3]time.Duration
	run         time.Duration
	durationSum time.Duration
}

func expect(events []statstest.Event) expected {
	type success struct {
		at time.Time
		d  time.Duration
	}
	first := map[int64]success{}
	maxAttempt := map[int64]int{}
	stepAttempts := map[int]int{}
	failed := map[[3]int64]string{}
	var started, s1, s2Start, s2Done, ended time.Time
	ended2 := false
	for _, e := range events {
		switch m := e.Message.(type) {
		case job.JobStarted:
			started = m.At
		case job.Step1Completed:
			s1 = m.At
			stepAttempts[1] = max(stepAttempts[1], m.Attempt)
		case job.Step2Started:
			s2Start = m.At
		case job.Step2Completed:
			s2Done = m.At
		case job.Step3Completed:
			stepAttempts[3] = max(stepAttempts[3], m.Attempt)
		case job.JobCompleted:
			ended, ended2 = m.At, true
		case job.StepFailed:
			if !ended2 {
				stepAttempts[m.Step] = max(stepAttempts[m.Step], m.Attempt)
				failed[[3]int64{int64(m.Step), 0, int64(m.Attempt)}] = m.Error
			}
		case job.Step2SubjobFailed:
			if !ended2 {
				maxAttempt[m.Index] = max(maxAttempt[m.Index], m.Attempt)
				failed[[3]int64{2, m.Index, int64(m.Attempt)}] = m.Error
			}
		case job.AttemptTimedOut:
			if !ended2 && m.Step == 2 {
				maxAttempt[m.Index] = max(maxAttempt[m.Index], m.Attempt)
			}
		case job.Step2SubjobCompleted:
			if ended2 {
				continue
			}
			maxAttempt[m.Index] = max(maxAttempt[m.Index], m.Attempt)
			at, d := m.At.Truncate(time.Microsecond), m.Duration.Truncate(time.Microsecond)
			if f, ok := first[m.Index]; !ok || at.Before(f.at) || (at.Equal(f.at) && d < f.d) {
				first[m.Index] = success{at, d}
			}
		}
	}
	x := expected{perSecond: map[int64]int64{}, errors: map[string]int64{}}
	for _, s := range first {
		x.durations = append(x.durations, s.d)
		x.perSecond[s.at.Unix()]++
		x.durationSum += s.d
	}
	slices.Sort(x.durations)
	for _, a := range maxAttempt {
		x.attempts += int64(a)
	}
	for _, a := range stepAttempts {
		x.attempts += int64(a)
	}
	for _, text := range failed {
		x.errors[strings.Join(strings.Fields(text), " ")]++
	}
	x.steps = [3]time.Duration{s1.Sub(started), s2Done.Sub(s2Start), ended.Sub(s2Done)}
	x.run = ended.Sub(started)
	return x
}

// quantile is the exact q-quantile of sorted durations, as DDSketch ranks them.
func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(q*float64(len(sorted)-1))]
}

func within(got, want time.Duration, rel float64) bool {
	return math.Abs(float64(got-want)) <= rel*float64(want)+float64(time.Microsecond)
}

func TestScriptedJob(t *testing.T) {
	p, store := newProjection(t)
	events := fullRun("job-1", "acme", "invoices", 400).Events()
	apply(t, p, events...)
	st := jobStats(t, p, "job-1")
	counts, ok := statstest.Counts(events)
	if !ok {
		t.Fatal("the scripted job did not end")
	}
	if counts.Duplicates == 0 || counts.Late == 0 || counts.TimedOut == 0 || counts.Failed == 0 || counts.Retries == 0 {
		t.Fatalf("the script does not exercise every counter: %+v", counts)
	}
	x := expect(events)

	if st.Jobs != 1 || st.JobsCompleted != 1 || st.JobsFailed != 0 || st.JobsCancelled != 0 {
		t.Errorf("jobs: %+v", st)
	}
	got := job.Counts{Total: st.Total, Succeeded: st.Succeeded, Failed: st.Failed, Retries: st.Retries,
		TimedOut: st.TimedOut, Duplicates: st.Duplicates, Late: st.Late}
	if got != counts {
		t.Errorf("counters %+v, want the manager's %+v", got, counts)
	}
	if st.Attempts != x.attempts {
		t.Errorf("attempts %d, want %d", st.Attempts, x.attempts)
	}
	for i, want := range x.steps {
		if s := st.Steps[i]; s != (stats.Durations{Count: 1, Mean: want, P50: want, P95: want, P99: want}) {
			t.Errorf("step %d: %+v, want exactly %s", i+1, s, want)
		}
	}
	if st.Run.Count != 1 || st.Run.Mean != x.run {
		t.Errorf("run: %+v, want %s", st.Run, x.run)
	}

	sj := st.SubJobs
	if sj.Count != int64(len(x.durations)) || sj.Count != counts.Succeeded {
		t.Errorf("sub-job durations count %d, want %d (succeeded %d)", sj.Count, len(x.durations), counts.Succeeded)
	}
	if want := x.durationSum / time.Duration(len(x.durations)); sj.Mean != want {
		t.Errorf("mean sub-job duration %s, want %s", sj.Mean, want)
	}
	for _, c := range []struct {
		q   float64
		got time.Duration
	}{{0.5, sj.P50}, {0.95, sj.P95}, {0.99, sj.P99}} {
		if want := quantile(x.durations, c.q); !within(c.got, want, stats.RelativeAccuracy) {
			t.Errorf("p%v sub-job duration %s, want %s within 1%%", c.q*100, c.got, want)
		}
	}

	var total int64
	for _, b := range st.Throughput {
		total += b.Completed
		var want int64
		for s, n := range x.perSecond {
			if t := time.Unix(s, 0); !t.Before(b.Start) && t.Before(b.Start.Add(st.BucketWidth)) {
				want += n
			}
		}
		if b.Completed != want {
			t.Errorf("bucket %s: %d completions, want %d", b.Start, b.Completed, want)
		}
	}
	if total != counts.Succeeded || len(st.Throughput) > stats.MaxBuckets || st.BucketWidth < time.Second {
		t.Errorf("throughput: %d completions in %d buckets of %s", total, len(st.Throughput), st.BucketWidth)
	}

	wantErrors := make([]stats.ErrorCount, 0, len(x.errors))
	for text, n := range x.errors {
		wantErrors = append(wantErrors, stats.ErrorCount{Error: text, Count: n})
	}
	sort.Slice(wantErrors, func(i, j int) bool {
		if wantErrors[i].Count != wantErrors[j].Count {
			return wantErrors[i].Count > wantErrors[j].Count
		}
		return wantErrors[i].Error < wantErrors[j].Error
	})
	if !reflect.DeepEqual(st.TopErrors, wantErrors) {
		t.Errorf("top errors %v, want %v", st.TopErrors, wantErrors)
	}
	if n := store.bookkeeping("job-1"); n != 0 {
		t.Errorf("%d bookkeeping rows left after the job ended", n)
	}
}

func TestDeliveredTwice(t *testing.T) {
	events := fullRun("job-1", "acme", "invoices", 300).Events()

	once, _ := newProjection(t)
	apply(t, once, events...)
	want := jobStats(t, once, "job-1")

	t.Run("each event twice in a row", func(t *testing.T) {
		p, _ := newProjection(t)
		for _, e := range events {
			apply(t, p, e, e)
		}
		if got := jobStats(t, p, "job-1"); !reflect.DeepEqual(got, want) {
			t.Fatalf("delivered twice:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("the whole log twice", func(t *testing.T) {
		p, _ := newProjection(t)
		apply(t, p, events...)
		apply(t, p, events...)
		if got := jobStats(t, p, "job-1"); !reflect.DeepEqual(got, want) {
			t.Fatalf("log replayed:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("running job, each event twice", func(t *testing.T) {
		prefix := events[:len(events)/2]
		p1, _ := newProjection(t)
		apply(t, p1, prefix...)
		p2, _ := newProjection(t)
		for _, e := range prefix {
			apply(t, p2, e, e)
		}
		if got, want := jobStats(t, p2, "job-1"), jobStats(t, p1, "job-1"); !reflect.DeepEqual(got, want) {
			t.Fatalf("running job delivered twice:\n got %+v\nwant %+v", got, want)
		}
	})
	t.Run("reset and replay", func(t *testing.T) {
		p, _ := newProjection(t)
		apply(t, p, events...)
		if err := p.Reset(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := p.JobStats(context.Background(), "job-1", ""); !errors.Is(err, job.ErrNotFound) {
			t.Fatalf("statistics after reset: %v", err)
		}
		apply(t, p, events...)
		if got := jobStats(t, p, "job-1"); !reflect.DeepEqual(got, want) {
			t.Fatalf("rebuilt:\n got %+v\nwant %+v", got, want)
		}
	})
}

// The rules for what one report or event does to a running job, table-driven over short streams.
func TestReportRules(t *testing.T) {
	const id = "job-r"
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	ev := func(eid string, m job.Message) statstest.Event { return statstest.Event{ID: eid, Message: m} }
	started := ev("s", job.JobStarted{JobID: id, Tenant: "acme", Type: "t", At: at(0)})
	ok := func(eid string, idx int64, attempt, atMs, durMs int) statstest.Event {
		return ev(eid, job.Step2SubjobCompleted{JobID: id, Index: idx, Attempt: attempt, At: at(atMs), Duration: time.Duration(durMs) * time.Millisecond})
	}
	fail := func(eid string, idx int64, attempt int, text string) statstest.Event {
		return ev(eid, job.Step2SubjobFailed{JobID: id, Index: idx, Attempt: attempt, Error: text, At: at(1)})
	}
	timeout := func(eid string, step int, idx int64, attempt int) statstest.Event {
		return ev(eid, job.AttemptTimedOut{JobID: id, Step: step, Index: idx, Attempt: attempt, At: at(2)})
	}
	type want struct {
		succeeded, duplicates, attempts, retries, timedOut int64
		subJobs                                            stats.Durations
		errors                                             []stats.ErrorCount
		completions                                        int64
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	one := func(d time.Duration) stats.Durations {
		return stats.Durations{Count: 1, Mean: d, P50: d, P95: d, P99: d}
	}
	for _, c := range []struct {
		name   string
		events []statstest.Event
		want   want
	}{
		{"a success counts once per event id",
			[]statstest.Event{started, ok("a", 0, 1, 10, 5), ok("a", 0, 1, 10, 5)},
			want{succeeded: 1, attempts: 1, subJobs: one(ms(5)), completions: 1}},
		{"a second report of the same attempt is a duplicate",
			[]statstest.Event{started, ok("a", 0, 1, 10, 5), ok("b", 0, 1, 12, 7)},
			want{succeeded: 1, duplicates: 1, attempts: 1, subJobs: one(ms(5)), completions: 1}},
		{"the earliest success counts whatever the order",
			[]statstest.Event{started, ok("b", 0, 1, 12, 7), ok("a", 0, 1, 10, 5)},
			want{succeeded: 1, duplicates: 1, attempts: 1, subJobs: one(ms(5)), completions: 1}},
		{"on a tie of times the shorter run counts",
			[]statstest.Event{started, ok("b", 0, 1, 10, 9), ok("a", 0, 1, 10, 5)},
			want{succeeded: 1, duplicates: 1, attempts: 1, subJobs: one(ms(5)), completions: 1}},
		{"a report before JobStarted is kept",
			[]statstest.Event{ok("a", 0, 1, 10, 5), started},
			want{succeeded: 1, attempts: 1, subJobs: one(ms(5)), completions: 1}},
		{"a success of a later attempt counts its attempts and retries",
			[]statstest.Event{started, fail("f", 0, 1, "boom"), ok("a", 0, 2, 10, 5)},
			want{succeeded: 1, attempts: 2, retries: 1, subJobs: one(ms(5)), completions: 1,
				errors: []stats.ErrorCount{{Error: "boom", Count: 1}}}},
		{"attempts count from the highest number, whatever arrives",
			[]statstest.Event{started, ok("a", 0, 3, 10, 5)},
			want{succeeded: 1, attempts: 3, retries: 2, subJobs: one(ms(5)), completions: 1}},
		{"a failed attempt reported twice counts once, under the least text",
			[]statstest.Event{started, fail("f1", 0, 1, "zeta  failure"), fail("f2", 0, 1, "alpha\nfailure"), fail("f2", 0, 1, "alpha\nfailure")},
			want{duplicates: 1, attempts: 1, errors: []stats.ErrorCount{{Error: "alpha failure", Count: 1}}}},
		{"failures of different attempts count each",
			[]statstest.Event{started, fail("f1", 0, 1, "boom"), fail("f2", 0, 2, "boom"), fail("f3", 1, 1, "bang")},
			want{attempts: 3, retries: 1, errors: []stats.ErrorCount{{Error: "boom", Count: 2}, {Error: "bang", Count: 1}}}},
		{"a time-out counts once per attempt",
			[]statstest.Event{started, timeout("t1", 2, 0, 1), timeout("t2", 2, 0, 1), timeout("t3", 1, 0, 1)},
			want{timedOut: 2, attempts: 2}},
		{"step failures count among the errors",
			[]statstest.Event{started, ev("sf", job.StepFailed{JobID: id, Step: 3, Attempt: 1, Error: "no disk", At: at(3)}),
				ev("s3", job.Step3Completed{JobID: id, Attempt: 2, At: at(4)})},
			want{attempts: 2, retries: 1, errors: []stats.ErrorCount{{Error: "no disk", Count: 1}}}},
		{"ticks and commands change nothing",
			[]statstest.Event{started, ev("t", job.Tick{JobID: id, At: at(5)}), ev("c", job.RunSubJobs{JobID: id, Runs: []job.SubJobRun{{Index: 0, Attempt: 1}}})},
			want{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _ := newProjection(t)
			apply(t, p, c.events...)
			st := jobStats(t, p, id)
			var completions int64
			for _, b := range st.Throughput {
				completions += b.Completed
			}
			got := want{succeeded: st.Succeeded, duplicates: st.Duplicates, attempts: st.Attempts, retries: st.Retries,
				timedOut: st.TimedOut, subJobs: st.SubJobs, errors: st.TopErrors, completions: completions}
			if len(got.errors) == 0 {
				got.errors = nil
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestEndClosesJob(t *testing.T) {
	const id = "job-e"
	p, store := newProjection(t)
	events := []statstest.Event{{ID: "s", Message: job.JobStarted{JobID: id, Tenant: "acme", Type: "t", At: start}}}
	// More distinct error texts than an ended job keeps.
	for i := range stats.KeptErrors + 50 {
		n := 1
		if i < 3 {
			n = 5 // the three most frequent
		}
		for a := 1; a <= n; a++ {
			events = append(events, statstest.Event{ID: fmt.Sprintf("f%d-%d", i, a), Message: job.Step2SubjobFailed{
				JobID: id, Index: int64(i), Attempt: a, Error: fmt.Sprintf("error %03d", i), At: start}})
		}
	}
	events = append(events, statstest.Event{ID: "ok", Message: job.Step2SubjobCompleted{JobID: id, Index: 999, Attempt: 1, At: start, Duration: time.Second}})
	final := job.Counts{Total: 1000, Succeeded: 1, Failed: 150, Retries: 12, TimedOut: 0, Duplicates: 4, Late: 2}
	apply(t, p, events...)
	if store.bookkeeping(id) == 0 {
		t.Fatal("no bookkeeping while the job runs")
	}
	apply(t, p, statstest.Event{ID: "end", Message: job.JobFailed{JobID: id, Reason: "too many failures", At: start.Add(time.Minute), Counts: final}})
	if n := store.bookkeeping(id); n != 0 {
		t.Fatalf("%d bookkeeping rows left after the end", n)
	}
	ended, err := p.Aggregate(context.Background(), stats.Filter{TopErrors: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(ended.TopErrors) != stats.KeptErrors+1 {
		t.Fatalf("%d error texts kept, want %d and the others", len(ended.TopErrors), stats.KeptErrors)
	}
	if top := ended.TopErrors[:4]; !reflect.DeepEqual(top, []stats.ErrorCount{{stats.OtherErrors, 50}, {"error 000", 5}, {"error 001", 5}, {"error 002", 5}}) {
		t.Fatalf("most frequent errors after the end: %v", top)
	}
	if ended.JobsFailed != 1 || ended.Failed != 150 || ended.Duplicates != 4 || ended.Late != 2 || ended.Retries != 12 {
		t.Fatalf("final counters not applied: %+v", ended)
	}

	// Nothing that arrives after the end changes the statistics: a new report, one seen before, the end again.
	apply(t, p,
		statstest.Event{ID: "new", Message: job.Step2SubjobCompleted{JobID: id, Index: 5, Attempt: 9, At: start, Duration: time.Hour}},
		statstest.Event{ID: "f0-1", Message: job.Step2SubjobFailed{JobID: id, Index: 0, Attempt: 1, Error: "error 000", At: start}},
		statstest.Event{ID: "t", Message: job.AttemptTimedOut{JobID: id, Step: 2, Index: 7, Attempt: 1, At: start}},
		statstest.Event{ID: "end2", Message: job.JobCompleted{JobID: id, At: start.Add(time.Hour), Counts: job.Counts{Succeeded: 7}}},
	)
	after, err := p.Aggregate(context.Background(), stats.Filter{TopErrors: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(after, ended) {
		t.Fatalf("changed after the end:\n got %+v\nwant %+v", after, ended)
	}
	if n := store.bookkeeping(id); n != 0 {
		t.Fatalf("%d bookkeeping rows recreated after the end", n)
	}
}

func TestJobStatsTenant(t *testing.T) {
	p, _ := newProjection(t)
	apply(t, p, fullRun("job-a", "acme", "invoices", 20).Events()...)
	// A report whose JobStarted has not arrived: the job's tenant is unknown.
	apply(t, p, statstest.Event{ID: "x", Message: job.Step2SubjobCompleted{JobID: "job-x", Index: 0, Attempt: 1, At: start}})
	ctx := context.Background()
	for _, c := range []struct {
		id, tenant string
		found      bool
	}{
		{"job-a", "acme", true}, {"job-a", "", true}, {"job-a", "globex", false},
		{"missing", "", false}, {"job-x", "", false}, {"job-x", "acme", false},
	} {
		st, err := p.JobStats(ctx, c.id, c.tenant)
		if c.found != (err == nil) || (!c.found && !errors.Is(err, job.ErrNotFound)) {
			t.Errorf("JobStats(%s, %q): %v", c.id, c.tenant, err)
		}
		if c.found && st.Jobs != 1 {
			t.Errorf("JobStats(%s, %q): %+v", c.id, c.tenant, st)
		}
	}
}

func TestAggregate(t *testing.T) {
	p, _ := newProjection(t)
	type jobDef struct {
		id, tenant, typ string
		n               int
		created         time.Time
	}
	defs := []jobDef{
		{"a1", "acme", "invoices", 30, start},
		{"a2", "acme", "invoices", 40, start.Add(time.Hour)},
		{"a3", "acme", "reports", 50, start.Add(2 * time.Hour)},
		{"g1", "globex", "invoices", 60, start.Add(3 * time.Hour)},
		{"g2", "globex", "reports", 70, start.Add(4 * time.Hour)},
	}
	single := map[string]stats.Stats{}
	for _, d := range defs {
		r := fullRun(d.id, d.tenant, d.typ, d.n)
		r.Start = d.created
		apply(t, p, r.Events()...)
		single[d.id] = jobStats(t, p, d.id)
	}
	// A job still running whose JobStarted is missing belongs to no aggregate.
	apply(t, p, statstest.Event{ID: "x", Message: job.Step2SubjobCompleted{JobID: "x", Index: 0, Attempt: 1, At: start}})

	for _, c := range []struct {
		name   string
		filter stats.Filter
		jobs   []string
	}{
		{"everything", stats.Filter{}, []string{"a1", "a2", "a3", "g1", "g2"}},
		{"one tenant", stats.Filter{Tenant: "acme"}, []string{"a1", "a2", "a3"}},
		{"one type", stats.Filter{Type: "invoices"}, []string{"a1", "a2", "g1"}},
		{"tenant and type", stats.Filter{Tenant: "globex", Type: "reports"}, []string{"g2"}},
		{"created in a range", stats.Filter{CreatedAfter: start.Add(time.Hour), CreatedBefore: start.Add(3 * time.Hour)}, []string{"a2", "a3"}},
		{"created after", stats.Filter{Tenant: "globex", CreatedAfter: start.Add(4 * time.Hour)}, []string{"g2"}},
		{"nothing", stats.Filter{Tenant: "initech"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := p.Aggregate(context.Background(), c.filter)
			if err != nil {
				t.Fatal(err)
			}
			var want stats.Stats
			errs := map[string]int64{}
			var stepSum [3]time.Duration
			for _, id := range c.jobs {
				s := single[id]
				want.Jobs++
				want.JobsCompleted += s.JobsCompleted
				want.Total += s.Total
				want.Succeeded += s.Succeeded
				want.Failed += s.Failed
				want.Attempts += s.Attempts
				want.Retries += s.Retries
				want.TimedOut += s.TimedOut
				want.Duplicates += s.Duplicates
				want.Late += s.Late
				want.SubJobs.Count += s.SubJobs.Count
				for i := range stepSum {
					stepSum[i] += s.Steps[i].Mean
				}
				for _, e := range s.TopErrors {
					errs[e.Error] += e.Count
				}
			}
			got := st
			got.Run, got.Steps, got.SubJobs, got.Throughput, got.BucketWidth, got.TopErrors = stats.Durations{}, [3]stats.Durations{}, stats.Durations{Count: st.SubJobs.Count}, nil, 0, nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("sums:\n got %+v\nwant %+v", got, want)
			}
			if len(c.jobs) == 0 {
				if !reflect.DeepEqual(st, stats.Stats{}) {
					t.Fatalf("no jobs: %+v", st)
				}
				return
			}
			for i := range stepSum {
				if mean := stepSum[i] / time.Duration(len(c.jobs)); st.Steps[i].Count != int64(len(c.jobs)) || st.Steps[i].Mean != mean {
					t.Errorf("step %d: %+v, want the mean %s of %d jobs", i+1, st.Steps[i], mean, len(c.jobs))
				}
			}
			var completions int64
			for _, b := range st.Throughput {
				completions += b.Completed
				if b.Start.UnixMicro()%st.BucketWidth.Microseconds() != 0 {
					t.Errorf("bucket %s not aligned to %s", b.Start, st.BucketWidth)
				}
			}
			if completions != want.Succeeded || len(st.Throughput) > stats.MaxBuckets {
				t.Errorf("throughput: %d completions in %d buckets, want %d", completions, len(st.Throughput), want.Succeeded)
			}
			for _, e := range st.TopErrors {
				if errs[e.Error] != e.Count {
					t.Errorf("error %q: %d, want %d", e.Error, e.Count, errs[e.Error])
				}
			}
			if len(st.TopErrors) != min(len(errs), stats.DefaultTopErrors) {
				t.Errorf("%d top errors of %d", len(st.TopErrors), len(errs))
			}
		})
	}
}

// reportLike says whether an event is applied through the job's bookkeeping, which its end deletes.
func reportLike(m job.Message) bool {
	switch m.(type) {
	case job.Step2SubjobCompleted, job.Step2SubjobFailed, job.StepFailed, job.AttemptTimedOut:
		return true
	}
	return false
}

func terminal(m job.Message) bool {
	switch m.(type) {
	case job.JobCompleted, job.JobFailed, job.JobCancelled:
		return true
	}
	return false
}

// drawEvents draws a job with random failures, time-outs, duplicate reports, step 1 retries, perhaps a
// cancellation, and the events it logged: all of them, or those up to a point while it still runs.
func drawEvents(t *rapid.T, jobID string) (statstest.Run, []statstest.Event) {
	every := func(label string) int { return rapid.IntRange(0, 6).Draw(t, label) }
	run := statstest.Run{JobID: jobID, Tenant: "acme", Type: "t", Start: start,
		SubJobs:        rapid.IntRange(1, 40).Draw(t, "subjobs"),
		FailFirstEvery: every("failFirst"), FailEvery: every("fail"), TimeOutEvery: every("timeOut"),
		DuplicateEvery: every("duplicate"), Step1Retry: rapid.Bool().Draw(t, "step1Retry"),
	}
	if rapid.Bool().Draw(t, "cancel") {
		run.CancelAfter = rapid.IntRange(1, 30).Draw(t, "cancelAfter")
	}
	events := run.Events()
	if rapid.Bool().Draw(t, "running") {
		events = events[:rapid.IntRange(1, len(events)).Draw(t, "prefix")]
	}
	return run, events
}

// TestAnyOrder: whatever the order of arrival, and with any event delivered twice, a job's statistics
// are those of its events applied once in log order. The one order the rules cannot undo is a report
// that first arrives after its job's end (the end deletes what deduplicates reports), so the
// interleavings keep the job's end after the first arrival of the reports logged before it, and before
// the reports logged after it.
func TestAnyOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		run, events := drawEvents(t, "job-p")

		inOrder, _ := newProjection(t)
		apply(t, inOrder, events...)
		want := jobStats(t, inOrder, run.JobID)

		end := slices.IndexFunc(events, func(e statstest.Event) bool { return terminal(e.Message) })
		var before, after, free []statstest.Event
		for i, e := range events {
			twice := rapid.Bool().Draw(t, fmt.Sprintf("twice %d", i))
			switch {
			case i == end:
				if twice {
					after = append(after, e)
				}
			case end >= 0 && reportLike(e.Message) && i < end:
				before = append(before, e)
				if twice {
					free = append(free, e)
				}
			case end >= 0 && reportLike(e.Message):
				after = append(after, e)
				if twice {
					after = append(after, e)
				}
			default:
				free = append(free, e)
				if twice {
					free = append(free, e)
				}
			}
		}
		for i, e := range free {
			if rapid.Bool().Draw(t, fmt.Sprintf("before the end %d", i)) {
				before = append(before, e)
			} else {
				after = append(after, e)
			}
		}
		order := rapid.Permutation(before).Draw(t, "before")
		if end >= 0 {
			order = append(order, events[end])
		}
		order = append(order, rapid.Permutation(after).Draw(t, "after")...)

		shuffled, _ := newProjection(t)
		apply(t, shuffled, order...)
		if got := jobStats(t, shuffled, run.JobID); !reflect.DeepEqual(got, want) {
			t.Fatalf("out of order:\n got %+v\nwant %+v", got, want)
		}
	})
}

// A report costs a few statements, however large the job.
func TestStatementsPerReport(t *testing.T) {
	p, store := newProjection(t)
	events := statstest.Run{JobID: "job-s", Tenant: "acme", Type: "t", Start: start, SubJobs: 500}.Events()
	var reports int
	for _, e := range events {
		if _, ok := e.Message.(job.Step2SubjobCompleted); ok {
			reports++
		}
	}
	apply(t, p, events...)
	if per := float64(store.statements) / float64(reports); per > 7 {
		t.Fatalf("%.1f store statements per report", per)
	}
}

// applyInBatches applies events in log order, handing runs of consecutive worker reports to ApplyReports
// in batches of random sizes, some delivered twice, as the router does with a worker's message.
func applyInBatches(t *rapid.T, p *stats.Projection, events []statstest.Event) {
	ctx := context.Background()
	for i := 0; i < len(events); {
		if !workerReport(events[i].Message) {
			apply(t, p, events[i])
			i++
			continue
		}
		size := rapid.IntRange(1, 8).Draw(t, "batch size")
		var ids []string
		var reports []job.Message
		for ; i < len(events) && len(reports) < size && workerReport(events[i].Message); i++ {
			ids, reports = append(ids, events[i].ID), append(reports, events[i].Message)
		}
		for range 1 + rapid.IntRange(0, 1).Draw(t, "redelivered") {
			if err := p.ApplyReports(ctx, ids, reports); err != nil {
				t.Fatalf("apply %d reports: %v", len(reports), err)
			}
		}
	}
}

func workerReport(m job.Message) bool {
	switch m.(type) {
	case job.Step2SubjobCompleted, job.Step2SubjobFailed:
		return true
	}
	return false
}

// TestReportsTogether: reports applied together, and whole messages of them delivered again, give the
// statistics of applying each report once, alone.
func TestReportsTogether(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		run, events := drawEvents(t, "job-b")
		alone, _ := newProjection(t)
		apply(t, alone, events...)
		want := jobStats(t, alone, run.JobID)

		together, _ := newProjection(t)
		applyInBatches(t, together, events)
		if got := jobStats(t, together, run.JobID); !reflect.DeepEqual(got, want) {
			t.Fatalf("reports together:\n got %+v\nwant %+v", got, want)
		}
	})
}

// Reports applied together share the job's reads and writes: about three statements each (the event id,
// the sub-job's read and write).
func TestStatementsPerReportTogether(t *testing.T) {
	p, store := newProjection(t)
	events := statstest.Run{JobID: "job-s", Tenant: "acme", Type: "t", Start: start, SubJobs: 512}.Events()
	var ids []string
	var reports []job.Message
	for _, e := range events {
		if terminal(e.Message) {
			break // the reports are applied while the job runs
		}
		if _, ok := e.Message.(job.Step2SubjobCompleted); ok {
			ids, reports = append(ids, e.ID), append(reports, e.Message)
			continue
		}
		apply(t, p, e)
	}
	if len(reports) != 512 {
		t.Fatalf("%d reports, want 512", len(reports))
	}
	before := store.statements
	for i := 0; i < len(reports); i += 32 {
		if err := p.ApplyReports(context.Background(), ids[i:i+32], reports[i:i+32]); err != nil {
			t.Fatal(err)
		}
	}
	if per := float64(store.statements-before) / float64(len(reports)); per > 3.5 {
		t.Fatalf("%.1f store statements per report applied 32 at a time", per)
	}
	if st := jobStats(t, p, "job-s"); st.Succeeded != 512 {
		t.Fatalf("%d succeeded, want 512", st.Succeeded)
	}
}
