package jobstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/stats/statstest"
)

var statsStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newStatsProjection(t *testing.T, b backend) (*stats.Projection, ProjectionDB) {
	t.Helper()
	db, ok := b.store.(ProjectionDB)
	if !ok {
		t.Fatalf("%T is no ProjectionDB", b.store)
	}
	st, err := NewStatsStore(db)
	if err != nil {
		t.Fatal(err)
	}
	p, err := stats.New(st)
	if err != nil {
		t.Fatal(err)
	}
	return p, db
}

// statsRun is a job that exercises every rule: failed attempts, sub-jobs failed for good, time-outs with
// late reports, duplicate reports, a step 1 retry.
func statsRun(id, tenant, typ string, n int, created time.Time) statstest.Run {
	return statstest.Run{JobID: id, Tenant: tenant, Type: typ, Start: created, SubJobs: n,
		FailFirstEvery: 10, FailEvery: 50, TimeOutEvery: 25, DuplicateEvery: 7, Step1Retry: true}
}

func applyStats(t *testing.T, ctx context.Context, p *stats.Projection, events []statstest.Event, times int) {
	t.Helper()
	for _, e := range events {
		for range times {
			if err := p.Apply(ctx, e.ID, e.Message); err != nil {
				t.Fatalf("apply %T: %v", e.Message, err)
			}
		}
	}
}

func mustJobStats(t *testing.T, p *stats.Projection, id string) stats.Stats {
	t.Helper()
	st, err := p.JobStats(context.Background(), id, "")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// bookkeepingRows counts a job's rows in the tables its end empties.
func bookkeepingRows(t *testing.T, db ProjectionDB, jobID string) int {
	t.Helper()
	total := 0
	for _, table := range []string{"stats_events", "stats_subjobs", "stats_attempts"} {
		var n int
		if err := db.ReadDB().QueryRow(db.Rebind(`SELECT COUNT(*) FROM `+table+` WHERE job_id = ?`), jobID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// reorder delivers events in an order of arrival a broker without ordering could produce: shuffled, some
// twice, with the job's end after the first arrival of every report logged before it (see
// app/stats.TestAnyOrder).
func reorder(events []statstest.Event, seed uint64) []statstest.Event {
	rnd := rand.New(rand.NewPCG(seed, seed))
	var before, after []statstest.Event
	var end *statstest.Event
	for _, e := range events {
		switch e.Message.(type) {
		case job.JobCompleted, job.JobFailed, job.JobCancelled:
			e := e
			end = &e
			continue
		case job.Step2SubjobCompleted, job.Step2SubjobFailed, job.StepFailed, job.AttemptTimedOut:
			before = append(before, e)
		default:
			if rnd.IntN(2) == 0 {
				before = append(before, e)
			} else {
				after = append(after, e)
			}
		}
		if rnd.IntN(3) == 0 {
			after = append(after, e)
		}
	}
	rnd.Shuffle(len(before), func(i, j int) { before[i], before[j] = before[j], before[i] })
	rnd.Shuffle(len(after), func(i, j int) { after[i], after[j] = after[j], after[i] })
	out := append(before, *end, *end)
	return append(out, after...)
}

func TestStatsStore(t *testing.T) {
	// Every backend must compute the same statistics from the same events.
	var (
		mu        sync.Mutex
		byBackend = map[string]stats.Stats{}
	)
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		p, db := newStatsProjection(t, b)
		events := func(id string) []statstest.Event { return statsRun(id, "acme", "invoices", 1000, statsStart).Events() }

		applyStats(t, ctx, p, events("once"), 1)
		want := mustJobStats(t, p, "once")
		if c, _ := statstest.Counts(events("once")); want.Succeeded != c.Succeeded || want.SubJobs.Count != c.Succeeded ||
			want.Duplicates != c.Duplicates || want.Late != c.Late || want.TimedOut != c.TimedOut || want.Failed == 0 {
			t.Fatalf("statistics %+v do not match the final counts %+v", want, c)
		}
		if n := bookkeepingRows(t, db, "once"); n != 0 {
			t.Fatalf("%d bookkeeping rows left after the job ended", n)
		}
		mu.Lock()
		byBackend[t.Name()] = want
		mu.Unlock()

		t.Run("every event delivered twice", func(t *testing.T) {
			applyStats(t, ctx, p, events("twice"), 2)
			if got := mustJobStats(t, p, "twice"); !reflect.DeepEqual(got, want) {
				t.Fatalf("delivered twice:\n got %+v\nwant %+v", got, want)
			}
		})

		t.Run("in a log batch", func(t *testing.T) {
			b.inBatch(t, func(ctx context.Context) {
				applyStats(t, ctx, p, events("batch"), 2)
			})
			if got := mustJobStats(t, p, "batch"); !reflect.DeepEqual(got, want) {
				t.Fatalf("applied in a batch:\n got %+v\nwant %+v", got, want)
			}
		})

		small := func(id string) []statstest.Event { return statsRun(id, "acme", "invoices", 200, statsStart).Events() }
		t.Run("out of order", func(t *testing.T) {
			applyStats(t, ctx, p, small("in-order"), 1)
			applyStats(t, ctx, p, reorder(small("shuffled"), 7), 1)
			if got, want := mustJobStats(t, p, "shuffled"), mustJobStats(t, p, "in-order"); !reflect.DeepEqual(got, want) {
				t.Fatalf("applied out of order:\n got %+v\nwant %+v", got, want)
			}
		})

		t.Run("a running job delivered twice", func(t *testing.T) {
			all := small("run-1")
			applyStats(t, ctx, p, all[:len(all)/2], 1)
			once := mustJobStats(t, p, "run-1")
			if bookkeepingRows(t, db, "run-1") == 0 {
				t.Fatal("no bookkeeping while the job runs")
			}
			all = small("run-2")
			applyStats(t, ctx, p, all[:len(all)/2], 2)
			if got := mustJobStats(t, p, "run-2"); !reflect.DeepEqual(got, once) {
				t.Fatalf("running job delivered twice:\n got %+v\nwant %+v", got, once)
			}
		})

		t.Run("reset and rebuild", func(t *testing.T) {
			if err := p.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			for _, table := range statsTables {
				if n := countRows(t, db.ReadDB(), table); n != 0 {
					t.Fatalf("%d rows left in %s after the reset", n, table)
				}
			}
			if _, err := p.JobStats(ctx, "once", ""); !errors.Is(err, job.ErrNotFound) {
				t.Fatalf("statistics after the reset: %v", err)
			}
			applyStats(t, ctx, p, events("once"), 1)
			if got := mustJobStats(t, p, "once"); !reflect.DeepEqual(got, want) {
				t.Fatalf("rebuilt:\n got %+v\nwant %+v", got, want)
			}
		})
	})
	var first stats.Stats
	var firstName string
	for name, st := range byBackend {
		if firstName == "" {
			first, firstName = st, name
			continue
		}
		if !reflect.DeepEqual(st, first) {
			t.Errorf("%s and %s disagree:\n%+v\n%+v", name, firstName, st, first)
		}
	}
}

func TestStatsStoreEndKeepsTopErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		p, _ := newStatsProjection(t, b)
		const id = "errs"
		events := []statstest.Event{{ID: "s", Message: job.JobStarted{JobID: id, Tenant: "acme", Type: "t", At: statsStart}}}
		for i := range stats.KeptErrors + 20 {
			n := 1
			if i%40 == 0 {
				n = 3
			}
			for a := 1; a <= n; a++ {
				events = append(events, statstest.Event{ID: fmt.Sprintf("f%d-%d", i, a), Message: job.Step2SubjobFailed{
					JobID: id, Index: int64(i), Attempt: a, Error: fmt.Sprintf("error %03d ünïcode", i), At: statsStart}})
			}
		}
		// The least text counts when one attempt is reported failed twice.
		events = append(events, statstest.Event{ID: "again", Message: job.Step2SubjobFailed{JobID: id, Index: 0, Attempt: 1, Error: "a first", At: statsStart}})
		applyStats(t, ctx, p, events, 1)
		st, err := p.Aggregate(ctx, stats.Filter{TopErrors: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.TopErrors) != stats.KeptErrors+20+1 || st.TopErrors[0] != (stats.ErrorCount{Error: "error 040 ünïcode", Count: 3}) ||
			st.TopErrors[2] != (stats.ErrorCount{Error: "error 000 ünïcode", Count: 2}) || st.TopErrors[3] != (stats.ErrorCount{Error: "a first", Count: 1}) {
			t.Fatalf("errors while the job runs: %d, %v", len(st.TopErrors), st.TopErrors[:4])
		}

		applyStats(t, ctx, p, []statstest.Event{{ID: "end", Message: job.JobFailed{JobID: id, At: statsStart.Add(time.Second),
			Counts: job.Counts{Failed: 120}}}}, 1)
		st, err = p.Aggregate(ctx, stats.Filter{TopErrors: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var other, sum int64
		for _, e := range st.TopErrors {
			sum += e.Count
			if e.Error == stats.OtherErrors {
				other = e.Count
			}
		}
		if len(st.TopErrors) != stats.KeptErrors+1 || other != 21 || sum != 126 {
			t.Fatalf("errors after the end: %d texts, %d others, %d in all: %v", len(st.TopErrors), other, sum, st.TopErrors)
		}
		if st.Failed != 120 || st.JobsFailed != 1 {
			t.Fatalf("final counts: %+v", st)
		}
	})
}

func TestStatsStoreTenantsAndAggregates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		p, _ := newStatsProjection(t, b)
		defs := []struct {
			id, tenant, typ string
			n               int
			created         time.Time
		}{
			{"a1", "acme", "invoices", 60, statsStart},
			{"a2", "acme", "invoices", 80, statsStart.Add(time.Hour)},
			{"a3", "acme", "reports", 100, statsStart.Add(2 * time.Hour)},
			{"g1", "globex", "invoices", 120, statsStart.Add(3 * time.Hour)},
			{"g2", "globex", "reports", 140, statsStart.Add(4 * time.Hour)},
		}
		single := map[string]stats.Stats{}
		for _, d := range defs {
			applyStats(t, ctx, p, statsRun(d.id, d.tenant, d.typ, d.n, d.created).Events(), 1)
			single[d.id] = mustJobStats(t, p, d.id)
		}
		// A job whose JobStarted has not arrived belongs to no tenant yet.
		applyStats(t, ctx, p, []statstest.Event{{ID: "x", Message: job.Step2SubjobCompleted{JobID: "x", Index: 0, Attempt: 1, At: statsStart}}}, 1)

		t.Run("job statistics are the tenant's own", func(t *testing.T) {
			for _, c := range []struct {
				id, tenant string
				found      bool
			}{
				{"a1", "acme", true}, {"a1", "", true}, {"a1", "globex", false}, {"g1", "acme", false},
				{"missing", "", false}, {"x", "", false}, {"x", "acme", false},
			} {
				_, err := p.JobStats(ctx, c.id, c.tenant)
				if c.found != (err == nil) || (!c.found && !errors.Is(err, job.ErrNotFound)) {
					t.Errorf("JobStats(%s, %q): %v", c.id, c.tenant, err)
				}
			}
		})

		for _, c := range []struct {
			name   string
			filter stats.Filter
			jobs   []string
		}{
			{"every tenant", stats.Filter{}, []string{"a1", "a2", "a3", "g1", "g2"}},
			{"one tenant", stats.Filter{Tenant: "acme"}, []string{"a1", "a2", "a3"}},
			{"the other tenant", stats.Filter{Tenant: "globex"}, []string{"g1", "g2"}},
			{"one type", stats.Filter{Type: "invoices"}, []string{"a1", "a2", "g1"}},
			{"a tenant's type", stats.Filter{Tenant: "acme", Type: "reports"}, []string{"a3"}},
			{"created in a range", stats.Filter{CreatedAfter: statsStart.Add(time.Hour), CreatedBefore: statsStart.Add(3 * time.Hour)}, []string{"a2", "a3"}},
			{"no such tenant", stats.Filter{Tenant: "initech"}, nil},
		} {
			t.Run(c.name, func(t *testing.T) {
				st, err := p.Aggregate(ctx, c.filter)
				if err != nil {
					t.Fatal(err)
				}
				var want stats.Stats
				var stepSum [3]time.Duration
				errs := map[string]int64{}
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
				got.Run, got.Steps, got.SubJobs = stats.Durations{}, [3]stats.Durations{}, stats.Durations{Count: st.SubJobs.Count}
				got.Throughput, got.BucketWidth, got.TopErrors = nil, 0, nil
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
				for _, bk := range st.Throughput {
					completions += bk.Completed
					if bk.Start.UnixMicro()%st.BucketWidth.Microseconds() != 0 {
						t.Errorf("bucket %s not aligned to %s", bk.Start, st.BucketWidth)
					}
				}
				if completions != want.SubJobs.Count || len(st.Throughput) > stats.MaxBuckets {
					t.Errorf("throughput: %d completions in %d buckets of %s, want %d", completions, len(st.Throughput), st.BucketWidth, want.SubJobs.Count)
				}
				if len(st.TopErrors) != min(len(errs), stats.DefaultTopErrors) {
					t.Errorf("%d top errors of %d", len(st.TopErrors), len(errs))
				}
				for _, e := range st.TopErrors {
					if errs[e.Error] != e.Count {
						t.Errorf("error %q: %d, want %d", e.Error, e.Count, errs[e.Error])
					}
				}
			})
		}

		t.Run("a narrower bucket than the span allows is widened", func(t *testing.T) {
			st, err := p.Aggregate(ctx, stats.Filter{Tenant: "acme", Bucket: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Throughput) > stats.MaxBuckets || st.BucketWidth <= time.Second {
				t.Fatalf("%d buckets of %s", len(st.Throughput), st.BucketWidth)
			}
			wide, err := p.Aggregate(ctx, stats.Filter{Tenant: "acme", Bucket: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			if wide.BucketWidth != time.Hour || len(wide.Throughput) != 3 {
				t.Fatalf("hourly: %d buckets of %s", len(wide.Throughput), wide.BucketWidth)
			}
		})
	})
}

// Reports of one job applied at once by several consumers (a broker's competing consumers) lose nothing:
// each transaction holds the job's row.
func TestStatsStoreConcurrentReports(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		p, _ := newStatsProjection(t, b)
		const id, workers, each = "conc", 4, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					idx := int64(w*each + i)
					e := job.Step2SubjobCompleted{JobID: id, Index: idx, Attempt: 1, At: statsStart.Add(time.Duration(idx) * time.Millisecond),
						Duration: time.Duration(idx+1) * time.Millisecond}
					// A transaction that loses a deadlock fails; the transport delivers the event again.
					var err error
					for range 20 {
						if err = p.Apply(ctx, fmt.Sprintf("c-%d", idx), e); err == nil {
							break
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		applyStats(t, ctx, p, []statstest.Event{{ID: "s", Message: job.JobStarted{JobID: id, Tenant: "acme", Type: "t", At: statsStart}}}, 1)
		st := mustJobStats(t, p, id)
		if st.Succeeded != workers*each || st.SubJobs.Count != workers*each || st.Attempts != workers*each {
			t.Fatalf("after concurrent reports: %+v", st)
		}
		if want := (time.Duration(workers*each+1) * time.Millisecond) / 2; st.SubJobs.Mean != want {
			t.Fatalf("mean %s, want %s", st.SubJobs.Mean, want)
		}
	})
}
