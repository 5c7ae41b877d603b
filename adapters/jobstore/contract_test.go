package jobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/sqllog"
	"github.com/jobmill/jobmill/adapters/sqlqueue"
	"github.com/jobmill/jobmill/app/job"
)

// backend is one store under the contract, with a way to count what its outbox holds.
type backend struct {
	store job.Store
	// outboxed counts the rows of the event log's table and of the work queue.
	outboxed func(t *testing.T) (events, commands int)
}

func forEachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("postgres", func(t *testing.T) { fn(t, newServerBackend(t, openPostgres(t), DialectPostgres)) })
	t.Run("mysql", func(t *testing.T) { fn(t, newServerBackend(t, openMySQL(t), DialectMySQL)) })
	t.Run("sqlite", func(t *testing.T) { fn(t, newSQLiteBackend(t)) })
}

func newServerBackend(t *testing.T, db *sql.DB, d Dialect) backend {
	t.Helper()
	ctx := context.Background()
	logDialect, queueDialect := sqllog.Dialect(d), sqlqueue.Dialect(d)
	if err := sqllog.Initialize(ctx, db, logDialect, messaging.EventsTopic); err != nil {
		t.Fatal(err)
	}
	if err := sqlqueue.Initialize(ctx, db, queueDialect); err != nil {
		t.Fatal(err)
	}
	outbox := Outbox{
		Events:   func(tx *sql.Tx) (message.Publisher, error) { return sqllog.NewTxPublisher(tx, logDialect) },
		Commands: func(tx *sql.Tx) (message.Publisher, error) { return sqlqueue.NewTxPublisher(tx, queueDialect) },
	}
	st, err := NewSQL(ctx, db, d, outbox, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	// A second NewSQL on a migrated schema is a no-op.
	again, err := NewSQL(ctx, db, d, outbox, nil)
	if err != nil {
		t.Fatalf("migrating twice: %v", err)
	}
	_ = again.Close()

	logTable := `"watermill_` + messaging.EventsTopic + `"`
	if d == DialectMySQL {
		logTable = "`watermill_" + messaging.EventsTopic + "`"
	}
	return backend{store: st, outboxed: func(t *testing.T) (int, int) {
		return countRows(t, db, logTable), countRows(t, db, sqlqueue.Table)
	}}
}

func newSQLiteBackend(t *testing.T) backend {
	t.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "jobmill.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := sqlite.InitializeLogTopics(ctx, db, messaging.EventsTopic); err != nil {
		t.Fatal(err)
	}
	if err := sqlite.InitializeQueue(ctx, db); err != nil {
		t.Fatal(err)
	}
	st, err := NewSQLite(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return backend{store: st, outboxed: func(t *testing.T) (int, int) {
		return countRows(t, db.Read, sqlite.LogSchema{}.MessagesTable(messaging.EventsTopic)), countRows(t, db.Read, "jobmill_queue")
	}}
}

func countRows(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM ` + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// at is a time with microsecond precision, the store's resolution.
func at(sec int64) time.Time { return time.UnixMicro(sec*1_000_000 + 123_456) }

func create(t *testing.T, st job.Store, id, tenant, typ, key string) (string, error) {
	t.Helper()
	j, fx, err := job.New(id, tenant, typ, []byte(`{"in":"`+id+`"}`), job.DefaultPolicy(), at(1000))
	if err != nil {
		t.Fatal(err)
	}
	var existing string
	err = st.Update(context.Background(), func(ctx context.Context, tx job.Tx) error {
		var err error
		if existing, err = tx.CreateJob(ctx, j, key); err != nil {
			return err
		}
		return tx.Publish(ctx, fx)
	})
	return existing, err
}

func mustCreate(t *testing.T, st job.Store, id, tenant, typ string) {
	t.Helper()
	if _, err := create(t, st, id, tenant, typ, ""); err != nil {
		t.Fatal(err)
	}
}

func update(t *testing.T, st job.Store, fn func(ctx context.Context, tx job.Tx) error) {
	t.Helper()
	if err := st.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func addSubJobs(t *testing.T, st job.Store, jobID string, first int64, n int) {
	t.Helper()
	inputs := make([][]byte, n)
	for i := range inputs {
		inputs[i] = []byte(fmt.Sprintf(`{"i":%d}`, first+int64(i)))
	}
	if err := st.AddSubJobs(context.Background(), jobID, first, inputs); err != nil {
		t.Fatal(err)
	}
}

func TestStoreContract(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		st := b.store
		ctx := context.Background()

		t.Run("create and idempotency key", func(t *testing.T) {
			ev0, _ := b.outboxed(t)
			if existing, err := create(t, st, "idem-1", "acme", "invoices", "key-1"); err != nil || existing != "" {
				t.Fatalf("first submission: %q, %v", existing, err)
			}
			existing, err := create(t, st, "idem-2", "acme", "invoices", "key-1")
			if !errors.Is(err, job.ErrDuplicateSubmission) || existing != "idem-1" {
				t.Fatalf("second submission: %q, %v; want idem-1, ErrDuplicateSubmission", existing, err)
			}
			// The key is per tenant, and jobs without a key never collide.
			if _, err := create(t, st, "idem-3", "other", "invoices", "key-1"); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, st, "idem-4", "acme", "invoices")
			mustCreate(t, st, "idem-5", "acme", "invoices")
			if _, err := st.GetJob(ctx, "idem-2"); !errors.Is(err, job.ErrNotFound) {
				t.Fatalf("refused job stored: %v", err)
			}
			if ev, _ := b.outboxed(t); ev != ev0+4 {
				t.Fatalf("%d JobStarted events in the outbox, want 4", ev-ev0)
			}
			if _, err := create(t, st, "idem-4", "acme", "invoices", ""); err == nil {
				t.Fatal("a second job with the same id was accepted")
			}
		})

		t.Run("job round trip", func(t *testing.T) {
			mustCreate(t, st, "rt-1", "acme", "invoices")
			want := &job.Job{
				ID: "rt-1", Tenant: "acme", Type: "invoices", Input: []byte(`{"in":"rt-1"}`),
				State: job.StateStep2Running, Policy: job.DefaultPolicy().WithDefaults(),
				Seq: 7, Total: 100, NextIndex: 40, InFlight: 30, Succeeded: 9, Failed: 1, Retries: 4, TimedOut: 2,
				Duplicates: 3, Late: 5, StepAttempt: 2, StepDeadline: at(2000), Output: []byte("out"), Error: "boom",
				CreatedAt: at(1000), UpdatedAt: at(2001),
				Steps: [3]job.StepTimes{
					{StartedAt: at(1001), FinishedAt: at(1002)},
					{StartedAt: at(1003), FinishedAt: at(1004)},
					{StartedAt: at(1005), FinishedAt: at(1006)},
				},
				EndedAt: at(1007),
			}
			want.Policy.MaxAttempts = 9
			want.Policy.ToleratedFailurePercent = 12.5
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "rt-1")
				if err != nil {
					return err
				}
				if j.State != job.StatePending || j.Seq != 1 || !j.CreatedAt.Equal(at(1000)) {
					return fmt.Errorf("created job reads back as %+v", j)
				}
				return tx.SaveJob(ctx, want)
			})
			got, err := st.GetJob(ctx, "rt-1")
			if err != nil {
				t.Fatal(err)
			}
			// The policy is stored by CreateJob; SaveJob keeps it.
			want.Policy = job.DefaultPolicy().WithDefaults()
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
			}
			if _, err := st.GetJob(ctx, "missing"); !errors.Is(err, job.ErrNotFound) {
				t.Fatalf("missing job: %v", err)
			}
			err = st.Update(ctx, func(ctx context.Context, tx job.Tx) error {
				_, err := tx.Job(ctx, "missing")
				return err
			})
			if !errors.Is(err, job.ErrNotFound) {
				t.Fatalf("missing job in a transaction: %v", err)
			}
		})

		t.Run("sub-jobs", func(t *testing.T) {
			mustCreate(t, st, "sj-1", "acme", "invoices")
			addSubJobs(t, st, "sj-1", 0, 1203) // more than one multi-row chunk
			// Re-running step 1 stores nothing twice and changes nothing.
			if err := st.AddSubJobs(ctx, "sj-1", 1000, [][]byte{[]byte("changed"), []byte("changed")}); err != nil {
				t.Fatal(err)
			}
			addSubJobs(t, st, "sj-1", 1203, 0)
			counts, err := st.CountSubJobs(ctx, "sj-1")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(counts, map[job.SubJobState]int64{job.SubJobPending: 1203}) {
				t.Fatalf("counts after split: %v", counts)
			}

			var pending []*job.SubJob
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				var err error
				pending, err = tx.PendingSubJobs(ctx, "sj-1", job.Range{From: 998, To: 1010})
				return err
			})
			if len(pending) != 12 || pending[0].Index != 998 || pending[11].Index != 1009 {
				t.Fatalf("pending range: %d sub-jobs", len(pending))
			}
			if string(pending[2].Input) != `{"i":1000}` {
				t.Fatalf("sub-job 1000 input %q: overwritten by a repeated split", pending[2].Input)
			}

			// Dispatch 998..1009, with a gap of different deadlines in the middle (several range updates).
			for i, s := range pending {
				s.State, s.Attempt, s.StartedAt, s.Deadline = job.SubJobRunning, 1, at(3000), at(3100)
				if i >= 5 && i < 7 {
					s.Deadline = at(3200)
				}
			}
			update(t, st, func(ctx context.Context, tx job.Tx) error { return tx.SaveDispatched(ctx, pending) })
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				again, err := tx.PendingSubJobs(ctx, "sj-1", job.Range{From: 990, To: 1020})
				if err != nil {
					return err
				}
				if len(again) != 30-12 {
					return fmt.Errorf("%d pending after dispatch, want 18", len(again))
				}
				for i, want := range pending {
					got, err := tx.SubJob(ctx, "sj-1", want.Index)
					if err != nil {
						return err
					}
					if got.State != job.SubJobRunning || got.Attempt != 1 || !got.StartedAt.Equal(at(3000)) || !got.Deadline.Equal(want.Deadline) {
						return fmt.Errorf("dispatched sub-job %d (%d) reads back as %+v", want.Index, i, got)
					}
				}
				return nil
			})

			// SubJob/SaveSubJob round trip, RETRY_WAIT keeps NextAttemptAt in due_at.
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				s, err := tx.SubJob(ctx, "sj-1", 1000)
				if err != nil {
					return err
				}
				s.State, s.Attempt, s.LastError, s.NextAttemptAt, s.Deadline = job.SubJobRetryWait, 2, "flaky", at(3050), time.Time{}
				if err := tx.SaveSubJob(ctx, s); err != nil {
					return err
				}
				s2, err := tx.SubJob(ctx, "sj-1", 1001)
				if err != nil {
					return err
				}
				s2.State, s2.Result, s2.FinishedAt = job.SubJobSucceeded, []byte(`"r1001"`), at(3060)
				if err := tx.SaveSubJob(ctx, s2); err != nil {
					return err
				}
				if _, err := tx.SubJob(ctx, "sj-1", 5000); !errors.Is(err, job.ErrNotFound) {
					return fmt.Errorf("missing sub-job: %v", err)
				}
				return nil
			})
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				s, err := tx.SubJob(ctx, "sj-1", 1000)
				if err != nil {
					return err
				}
				want := &job.SubJob{JobID: "sj-1", Index: 1000, State: job.SubJobRetryWait, Attempt: 2, Input: []byte(`{"i":1000}`),
					LastError: "flaky", NextAttemptAt: at(3050), StartedAt: at(3000)}
				if !reflect.DeepEqual(s, want) {
					return fmt.Errorf("sub-job round trip:\n got %+v\nwant %+v", s, want)
				}
				return nil
			})

			// DueSubJobs: running past deadline or retry due, ordered by due time, limited.
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				due, err := tx.DueSubJobs(ctx, "sj-1", at(3100), 100)
				if err != nil {
					return err
				}
				var idx []int64
				for _, s := range due {
					idx = append(idx, s.Index)
				}
				// 1000 (retry at 3050) first, then the eight running with deadline 3100; 1001 succeeded,
				// 1003/1004 have deadline 3200.
				if len(idx) != 9 || idx[0] != 1000 {
					return fmt.Errorf("due at 3100: %v", idx)
				}
				limited, err := tx.DueSubJobs(ctx, "sj-1", at(3100), 3)
				if err != nil {
					return err
				}
				if len(limited) != 3 {
					return fmt.Errorf("limit 3 gave %d", len(limited))
				}
				none, err := tx.DueSubJobs(ctx, "sj-1", at(3000), 100)
				if err != nil {
					return err
				}
				if len(none) != 0 {
					return fmt.Errorf("%d due before any deadline", len(none))
				}
				return nil
			})

			counts, err = st.CountSubJobs(ctx, "sj-1")
			if err != nil {
				t.Fatal(err)
			}
			want := map[job.SubJobState]int64{job.SubJobPending: 1203 - 12, job.SubJobRunning: 10, job.SubJobRetryWait: 1, job.SubJobSucceeded: 1}
			if !reflect.DeepEqual(counts, want) {
				t.Fatalf("counts %v, want %v", counts, want)
			}

			list, err := st.ListSubJobs(ctx, "sj-1", job.SubJobRunning, 1002, 4)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 4 || list[0].Index != 1003 || list[0].Input != nil || list[3].Index != 1006 {
				t.Fatalf("ListSubJobs: %+v", list)
			}
		})

		t.Run("rolled back update publishes nothing and skips AfterCommit", func(t *testing.T) {
			mustCreate(t, st, "rb-1", "acme", "invoices")
			ev0, cmd0 := b.outboxed(t)
			ran := false
			boom := errors.New("boom")
			err := st.Update(ctx, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "rb-1")
				if err != nil {
					return err
				}
				fx, _ := j.StartStep1(at(1100))
				fx.Events = append(fx.Events, job.JobCancelled{JobID: "rb-1"})
				if err := tx.SaveJob(ctx, j); err != nil {
					return err
				}
				if err := tx.Publish(ctx, fx); err != nil {
					return err
				}
				tx.AfterCommit(func() { ran = true })
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Update returned %v", err)
			}
			if ran {
				t.Fatal("AfterCommit ran after a rollback")
			}
			if ev, cmd := b.outboxed(t); ev != ev0 || cmd != cmd0 {
				t.Fatalf("rolled back update left %d events and %d commands", ev-ev0, cmd-cmd0)
			}
			if j, _ := st.GetJob(ctx, "rb-1"); j.State != job.StatePending {
				t.Fatalf("rolled back state change kept: %s", j.State)
			}

			// The same update committed publishes both, and runs AfterCommit after the commit.
			var seenAtCommit job.State
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "rb-1")
				if err != nil {
					return err
				}
				fx, _ := j.StartStep1(at(1100))
				fx.Events = append(fx.Events, job.JobCancelled{JobID: "rb-1"})
				if err := tx.SaveJob(ctx, j); err != nil {
					return err
				}
				if err := tx.Publish(ctx, fx); err != nil {
					return err
				}
				tx.AfterCommit(func() {
					// Read through another connection: visible only once committed.
					got, err := st.GetJob(context.Background(), "rb-1")
					if err == nil {
						seenAtCommit = got.State
					}
				})
				return nil
			})
			if seenAtCommit != job.StateStep1Running {
				t.Fatalf("AfterCommit saw state %q, want the committed STEP1_RUNNING", seenAtCommit)
			}
			if ev, cmd := b.outboxed(t); ev != ev0+1 || cmd != cmd0+1 {
				t.Fatalf("committed update left %d events and %d commands, want 1 and 1", ev-ev0, cmd-cmd0)
			}
		})

		t.Run("concurrent updates of one job serialise", func(t *testing.T) {
			mustCreate(t, st, "lock-1", "acme", "invoices")
			const workers, each = 4, 25
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range each {
						err := st.Update(ctx, func(ctx context.Context, tx job.Tx) error {
							j, err := tx.Job(ctx, "lock-1")
							if err != nil {
								return err
							}
							j.Seq++
							return tx.SaveJob(ctx, j)
						})
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
			j, err := st.GetJob(ctx, "lock-1")
			if err != nil {
				t.Fatal(err)
			}
			if j.Seq != 1+workers*each {
				t.Fatalf("seq %d after %d increments from 1: lost updates", j.Seq, workers*each)
			}
		})

		t.Run("list jobs", func(t *testing.T) {
			for i, tenant := range []string{"t1", "t1", "t2", "t1"} {
				mustCreate(t, st, fmt.Sprintf("ls-%d", i), tenant, map[bool]string{true: "a", false: "b"}[i%2 == 0])
			}
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "ls-3")
				if err != nil {
					return err
				}
				j.State = job.StateCompleted
				return tx.SaveJob(ctx, j)
			})
			ids := func(f job.ListFilter) []string {
				js, err := st.ListJobs(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, j := range js {
					out = append(out, j.ID)
				}
				return out
			}
			cases := []struct {
				f    job.ListFilter
				want []string
			}{
				{job.ListFilter{Tenant: "t1"}, []string{"ls-0", "ls-1", "ls-3"}},
				{job.ListFilter{Tenant: "t1", Type: "a"}, []string{"ls-0"}},
				{job.ListFilter{Tenant: "t1", States: []job.State{job.StateCompleted, job.StateFailed}}, []string{"ls-3"}},
				{job.ListFilter{Tenant: "t1", Limit: 2}, []string{"ls-0", "ls-1"}},
				{job.ListFilter{Tenant: "t1", AfterID: "ls-1"}, []string{"ls-3"}},
				{job.ListFilter{Tenant: "t2", Type: "a", States: []job.State{job.StatePending}}, []string{"ls-2"}},
			}
			for _, c := range cases {
				if got := ids(c.f); !reflect.DeepEqual(got, c.want) {
					t.Errorf("ListJobs(%+v) = %v, want %v", c.f, got, c.want)
				}
			}
		})

		t.Run("for each result", func(t *testing.T) {
			mustCreate(t, st, "res-1", "acme", "invoices")
			const n = 2500 // more than two pages
			addSubJobs(t, st, "res-1", 0, n)
			// Succeed every index but multiples of 7, in reverse order of index.
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				for i := int64(n - 1); i >= 0; i-- {
					if i%7 == 0 {
						continue
					}
					s, err := tx.SubJob(ctx, "res-1", i)
					if err != nil {
						return err
					}
					s.State, s.Result = job.SubJobSucceeded, []byte(fmt.Sprintf("r%d", i))
					if err := tx.SaveSubJob(ctx, s); err != nil {
						return err
					}
				}
				return nil
			})
			next := int64(1)
			count := 0
			err := st.ForEachResult(ctx, "res-1", func(i int64, r []byte) error {
				if i%7 == 0 {
					next = i + 1
				}
				if i != next || string(r) != fmt.Sprintf("r%d", i) {
					return fmt.Errorf("got %d %q, want index %d", i, r, next)
				}
				next++
				if next%7 == 0 {
					next++
				}
				count++
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := n - (n+6)/7; count != want {
				t.Fatalf("%d results, want %d", count, want)
			}
			stop := errors.New("stop")
			if err := st.ForEachResult(ctx, "res-1", func(int64, []byte) error { return stop }); !errors.Is(err, stop) {
				t.Fatalf("callback error: %v", err)
			}
		})

		t.Run("due jobs", func(t *testing.T) {
			// due-a: step 1 past its deadline. due-b: step 2 with a sub-job past its deadline.
			// due-c: step 2, nothing due. due-d: completed with an old deadline.
			for _, id := range []string{"due-a", "due-b", "due-c", "due-d"} {
				mustCreate(t, st, id, "acme", "invoices")
			}
			addSubJobs(t, st, "due-b", 0, 3)
			addSubJobs(t, st, "due-c", 0, 3)
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				set := func(id string, state job.State, attempt int, deadline time.Time) error {
					j, err := tx.Job(ctx, id)
					if err != nil {
						return err
					}
					j.State, j.StepAttempt, j.StepDeadline = state, attempt, deadline
					return tx.SaveJob(ctx, j)
				}
				if err := set("due-a", job.StateStep1Running, 1, at(5000)); err != nil {
					return err
				}
				if err := set("due-b", job.StateStep2Running, 0, time.Time{}); err != nil {
					return err
				}
				if err := set("due-c", job.StateStep2Running, 0, time.Time{}); err != nil {
					return err
				}
				if err := set("due-d", job.StateCompleted, 1, at(10)); err != nil {
					return err
				}
				for _, c := range []struct {
					id       string
					deadline time.Time
				}{{"due-b", at(5000)}, {"due-c", at(9000)}} {
					s, err := tx.SubJob(ctx, c.id, 1)
					if err != nil {
						return err
					}
					s.State, s.Attempt, s.Deadline = job.SubJobRunning, 1, c.deadline
					if err := tx.SaveSubJob(ctx, s); err != nil {
						return err
					}
				}
				return nil
			})
			// Jobs of the other cases share the store: look at this case's only.
			ours := func(ids []string) []string {
				var out []string
				for _, id := range ids {
					if strings.HasPrefix(id, "due-") {
						out = append(out, id)
					}
				}
				return out
			}
			due, err := st.DueJobs(ctx, at(6000), "due-", 100)
			if err != nil {
				t.Fatal(err)
			}
			if due = ours(due); !reflect.DeepEqual(due, []string{"due-a", "due-b"}) {
				t.Fatalf("DueJobs = %v, want [due-a due-b]", due)
			}
			page, err := st.DueJobs(ctx, at(6000), "due-a", 1)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(page, []string{"due-b"}) {
				t.Fatalf("DueJobs after due-a = %v", page)
			}
			if early, _ := st.DueJobs(ctx, at(4000), "due-", 100); len(ours(early)) != 0 {
				t.Fatalf("DueJobs before any deadline = %v", early)
			}
		})
	})
}
