package jobstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/pressly/goose/v3"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/sqllog"
	"github.com/jobmill/jobmill/adapters/sqlqueue"
	"github.com/jobmill/jobmill/adapters/sqltx"
	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/internal/servertest"
)

// backend is one store under the contract, with a way to count what its outbox holds.
type backend struct {
	store job.Store
	// outboxed counts the rows of the event log's table and of the work queue.
	outboxed func(t *testing.T) (events, commands int)
	// reopen returns a new store on new connections to the same database, as a restarted process opens it.
	reopen func(t *testing.T) job.Store
	// inBatch runs fn with the context of a message consumed from a log of the store's database, so that
	// an Update with that context joins the subscriber's batch transaction (and its write-behind job
	// cache). It returns once the batch committed.
	inBatch func(t *testing.T, fn func(ctx context.Context))
	// batchRow reads a job's stored deadline column inside the batch transaction ctx carries: what the
	// transaction holds, not what the store's cache holds.
	batchRow func(t *testing.T, ctx context.Context, id string) (deadline int64)
}

// batchTopics numbers the log topics that inBatch creates, one per call.
var batchTopics atomic.Int64

// consumeOne publishes one message to a new topic, receives it through sub, runs fn with its context,
// acks it, and waits until the batch transaction committed.
func consumeOne(t *testing.T, pub message.Publisher, sub message.Subscriber, topic string,
	onCommit func(ctx context.Context, fn func()) bool, fn func(ctx context.Context)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	defer func() { _ = sub.Close() }() // before cancel: closing commits what was acked
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var m *message.Message
	select {
	case m = <-ch:
	case <-ctx.Done():
		t.Fatal("no message from the log")
	}
	committed := make(chan struct{})
	if !onCommit(m.Context(), func() { close(committed) }) {
		t.Fatal("the message carries no transaction of the store's database")
	}
	fn(m.Context())
	m.Ack()
	select {
	case <-committed:
	case <-ctx.Done():
		t.Fatal("the batch did not commit")
	}
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
	open := func(t *testing.T, db *sql.DB) *SQL {
		t.Helper()
		st, err := NewSQL(ctx, db, d, outbox, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	st := open(t, db)
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
	return backend{
		store: st,
		outboxed: func(t *testing.T) (int, int) {
			return countRows(t, db, logTable), countRows(t, db, sqlqueue.Table)
		},
		reopen: func(t *testing.T) job.Store { return open(t, servertest.Reopen(t, db)) },
		inBatch: func(t *testing.T, fn func(ctx context.Context)) {
			t.Helper()
			pub, err := sqllog.NewPublisher(db, logDialect)
			if err != nil {
				t.Fatal(err)
			}
			sub, err := sqllog.NewSubscriber(db, logDialect, "jobstore_test", nil)
			if err != nil {
				t.Fatal(err)
			}
			topic := fmt.Sprintf("jobstore_batch_%d", batchTopics.Add(1))
			consumeOne(t, pub, sub, topic, func(ctx context.Context, f func()) bool {
				tx, ok := sqltx.FromContext(ctx, db)
				if ok {
					tx.AfterCommit(f)
				}
				return ok
			}, fn)
		},
		batchRow: func(t *testing.T, ctx context.Context, id string) int64 {
			t.Helper()
			tx, ok := sqltx.FromContext(ctx, db)
			if !ok {
				t.Fatal("no batch transaction in the context")
			}
			var deadline int64
			if err := tx.Tx.QueryRowContext(ctx, st.rebind(`SELECT deadline FROM jobs WHERE id = ?`), id).Scan(&deadline); err != nil {
				t.Fatal(err)
			}
			return deadline
		},
	}
}

func newSQLiteBackend(t *testing.T) backend {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobmill.db")
	open := func(t *testing.T) (*sqlite.DB, *SQLite) {
		t.Helper()
		db, err := sqlite.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		st, err := NewSQLite(ctx, db, nil)
		if err != nil {
			t.Fatal(err)
		}
		return db, st
	}
	db, st := open(t)
	if err := sqlite.InitializeLogTopics(ctx, db, messaging.EventsTopic); err != nil {
		t.Fatal(err)
	}
	if err := sqlite.InitializeQueue(ctx, db); err != nil {
		t.Fatal(err)
	}
	return backend{
		store: st,
		outboxed: func(t *testing.T) (int, int) {
			return countRows(t, db.Read, sqlite.LogSchema{}.MessagesTable(messaging.EventsTopic)), countRows(t, db.Read, "jobmill_queue")
		},
		reopen: func(t *testing.T) job.Store {
			_, st := open(t)
			return st
		},
		inBatch: func(t *testing.T, fn func(ctx context.Context)) {
			t.Helper()
			pub, err := sqlite.NewLogPublisher(db, nil)
			if err != nil {
				t.Fatal(err)
			}
			sub, err := sqlite.NewLogSubscriber(db, "jobstore_test", sqlite.LogSubscriberConfig{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			topic := fmt.Sprintf("jobstore_batch_%d", batchTopics.Add(1))
			if err := sqlite.InitializeLogTopics(ctx, db, topic); err != nil {
				t.Fatal(err)
			}
			consumeOne(t, pub, sub, topic, func(ctx context.Context, f func()) bool {
				tx, ok := sqlite.TxFromContext(ctx)
				if ok {
					tx.AfterCommit(f)
				}
				return ok
			}, fn)
		},
		batchRow: func(t *testing.T, ctx context.Context, id string) int64 {
			t.Helper()
			tx, ok := sqlite.TxFromContext(ctx)
			if !ok {
				t.Fatal("no batch transaction in the context")
			}
			var deadline int64
			if err := tx.SQL().QueryRowContext(ctx, `SELECT deadline FROM jobs WHERE id = ?`, id).Scan(&deadline); err != nil {
				t.Fatal(err)
			}
			return deadline
		},
	}
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
	return createJob(t, st, id, tenant, typ, key, at(1000), time.Time{})
}

func createJob(t *testing.T, st job.Store, id, tenant, typ, key string, createdAt, deadline time.Time) (string, error) {
	t.Helper()
	j, fx, err := job.New(id, tenant, typ, []byte(`{"in":"`+id+`"}`), job.DefaultPolicy(), createdAt)
	if err != nil {
		t.Fatal(err)
	}
	j.Deadline = deadline
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
	updateIn(t, context.Background(), st, fn)
}

func updateIn(t *testing.T, ctx context.Context, st job.Store, fn func(ctx context.Context, tx job.Tx) error) {
	t.Helper()
	if err := st.Update(ctx, fn); err != nil {
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
				EndedAt: at(1007), Deadline: at(1008),
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

		t.Run("deadline", func(t *testing.T) {
			if _, err := createJob(t, st, "dl-1", "dl", "invoices", "", at(1000), at(9000)); err != nil {
				t.Fatal(err)
			}
			if _, err := createJob(t, st, "dl-0", "dl", "invoices", "", at(1000), time.Time{}); err != nil {
				t.Fatal(err)
			}
			deadlineOf := func(st job.Store, id string) time.Time {
				t.Helper()
				j, err := st.GetJob(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				return j.Deadline
			}
			// CreateJob stores it; a job without one reads back zero.
			if d := deadlineOf(st, "dl-1"); !d.Equal(at(9000)) {
				t.Fatalf("created with deadline %v, reads back %v", at(9000), d)
			}
			if d := deadlineOf(st, "dl-0"); !d.IsZero() {
				t.Fatalf("created without a deadline, reads back %v", d)
			}
			// SaveJob stores a changed one, and ListJobs reads it like GetJob.
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "dl-1")
				if err != nil {
					return err
				}
				if !j.Deadline.Equal(at(9000)) {
					return fmt.Errorf("deadline in a transaction %v, want %v", j.Deadline, at(9000))
				}
				j.Deadline = at(9500)
				return tx.SaveJob(ctx, j)
			})
			if d := deadlineOf(st, "dl-1"); !d.Equal(at(9500)) {
				t.Fatalf("saved deadline %v, reads back %v", at(9500), d)
			}
			listed, err := st.ListJobs(ctx, job.ListFilter{Tenant: "dl"})
			if err != nil {
				t.Fatal(err)
			}
			if len(listed) != 2 || listed[0].ID != "dl-0" || !listed[0].Deadline.IsZero() || !listed[1].Deadline.Equal(at(9500)) {
				t.Fatalf("ListJobs: %+v", listed)
			}

			// In a log subscriber's batch, job rows are written once, when the batch commits: the deadline
			// must survive the batch's cache between Updates and be written by the flush.
			var seq int64
			b.inBatch(t, func(bctx context.Context) {
				updateIn(t, bctx, st, func(ctx context.Context, tx job.Tx) error {
					j, err := tx.Job(ctx, "dl-1")
					if err != nil {
						return err
					}
					if !j.Deadline.Equal(at(9500)) {
						return fmt.Errorf("deadline read in the batch %v, want %v", j.Deadline, at(9500))
					}
					j.Deadline, j.Seq = at(9700), j.Seq+1
					return tx.SaveJob(ctx, j)
				})
				if d := b.batchRow(t, bctx, "dl-1"); d != micros(at(9500)) {
					t.Fatalf("job row written before the batch commits (deadline %d): the batch no longer goes through the write-behind cache", d)
				}
				updateIn(t, bctx, st, func(ctx context.Context, tx job.Tx) error {
					j, err := tx.Job(ctx, "dl-1")
					if err != nil {
						return err
					}
					if !j.Deadline.Equal(at(9700)) {
						return fmt.Errorf("deadline from the batch's cache %v, want %v", j.Deadline, at(9700))
					}
					j.Seq++
					seq = j.Seq
					return tx.SaveJob(ctx, j)
				})
			})
			got, err := st.GetJob(ctx, "dl-1")
			if err != nil {
				t.Fatal(err)
			}
			if !got.Deadline.Equal(at(9700)) || got.Seq != seq {
				t.Fatalf("after the batch: deadline %v seq %d, want %v and %d", got.Deadline, got.Seq, at(9700), seq)
			}

			// A store opened anew (a restarted process) reads the same, inside and outside a transaction.
			again := b.reopen(t)
			if d := deadlineOf(again, "dl-1"); !d.Equal(at(9700)) {
				t.Fatalf("after re-opening: deadline %v, want %v", d, at(9700))
			}
			if d := deadlineOf(again, "dl-0"); !d.IsZero() {
				t.Fatalf("after re-opening: deadline %v, want none", d)
			}
			update(t, again, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "dl-1")
				if err != nil {
					return err
				}
				if !j.Deadline.Equal(at(9700)) {
					return fmt.Errorf("after re-opening, in a transaction: deadline %v, want %v", j.Deadline, at(9700))
				}
				// Clearing it is stored too.
				j.Deadline = time.Time{}
				return tx.SaveJob(ctx, j)
			})
			if d := deadlineOf(st, "dl-1"); !d.IsZero() {
				t.Fatalf("cleared deadline reads back %v", d)
			}
		})

		t.Run("list jobs by creation time", func(t *testing.T) {
			for _, c := range []struct {
				id, tenant, typ string
				created         time.Time
			}{
				{"tr-a", "tr", "x", at(100)},
				{"tr-b", "tr", "y", at(200)},
				{"tr-c", "tr", "x", at(300)},
				{"tr-d", "tr", "x", at(400)},
				{"tr-e", "tr2", "x", at(200)},
			} {
				if _, err := createJob(t, st, c.id, c.tenant, c.typ, "", c.created, time.Time{}); err != nil {
					t.Fatal(err)
				}
			}
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "tr-c")
				if err != nil {
					return err
				}
				j.State = job.StateCompleted
				return tx.SaveJob(ctx, j)
			})
			ns, us := time.Nanosecond, time.Microsecond
			elsewhere := time.FixedZone("UTC+5", 5*3600)
			cases := []struct {
				name string
				f    job.ListFilter
				want []string
			}{
				{"unbounded", job.ListFilter{Tenant: "tr"}, []string{"tr-a", "tr-b", "tr-c", "tr-d"}},
				{"after is inclusive", job.ListFilter{Tenant: "tr", CreatedAfter: at(200)}, []string{"tr-b", "tr-c", "tr-d"}},
				{"before is exclusive", job.ListFilter{Tenant: "tr", CreatedBefore: at(300)}, []string{"tr-a", "tr-b"}},
				{"both", job.ListFilter{Tenant: "tr", CreatedAfter: at(200), CreatedBefore: at(400)}, []string{"tr-b", "tr-c"}},
				{"empty range", job.ListFilter{Tenant: "tr", CreatedAfter: at(300), CreatedBefore: at(300)}, nil},
				{"inverted range", job.ListFilter{Tenant: "tr", CreatedAfter: at(400), CreatedBefore: at(100)}, nil},
				{"after everything", job.ListFilter{Tenant: "tr", CreatedAfter: at(400).Add(us)}, nil},
				// Times are stored in microseconds; a bound finer than that still compares exactly.
				{"after, a nanosecond late", job.ListFilter{Tenant: "tr", CreatedAfter: at(200).Add(ns)}, []string{"tr-c", "tr-d"}},
				{"after, a nanosecond early", job.ListFilter{Tenant: "tr", CreatedAfter: at(200).Add(-ns)}, []string{"tr-b", "tr-c", "tr-d"}},
				{"before, a nanosecond late", job.ListFilter{Tenant: "tr", CreatedBefore: at(300).Add(ns)}, []string{"tr-a", "tr-b", "tr-c"}},
				{"before, a nanosecond early", job.ListFilter{Tenant: "tr", CreatedBefore: at(300).Add(-ns)}, []string{"tr-a", "tr-b"}},
				{"another time zone", job.ListFilter{Tenant: "tr", CreatedAfter: at(200).In(elsewhere), CreatedBefore: at(300).In(elsewhere)}, []string{"tr-b"}},
				{"with type", job.ListFilter{Tenant: "tr", Type: "x", CreatedAfter: at(100), CreatedBefore: at(400)}, []string{"tr-a", "tr-c"}},
				{"with state", job.ListFilter{Tenant: "tr", States: []job.State{job.StatePending}, CreatedAfter: at(150)}, []string{"tr-b", "tr-d"}},
				{"with states", job.ListFilter{Tenant: "tr", States: []job.State{job.StateCompleted, job.StateFailed}, CreatedBefore: at(300)}, nil},
				{"with after id", job.ListFilter{Tenant: "tr", AfterID: "tr-b", CreatedBefore: at(400)}, []string{"tr-c"}},
				{"with limit", job.ListFilter{Tenant: "tr", CreatedAfter: at(150), Limit: 2}, []string{"tr-b", "tr-c"}},
				{"other tenant", job.ListFilter{Tenant: "tr2", CreatedAfter: at(150), CreatedBefore: at(250)}, []string{"tr-e"}},
				{"other tenant, outside", job.ListFilter{Tenant: "tr2", CreatedAfter: at(250)}, nil},
				// The other cases' jobs were created at 1000: this range holds only two of this case's.
				{"every tenant", job.ListFilter{CreatedAfter: at(200), CreatedBefore: at(201)}, []string{"tr-b", "tr-e"}},
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					js, err := st.ListJobs(ctx, c.f)
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for _, j := range js {
						got = append(got, j.ID)
						if !c.f.CreatedAfter.IsZero() && j.CreatedAt.Before(c.f.CreatedAfter) ||
							!c.f.CreatedBefore.IsZero() && !j.CreatedAt.Before(c.f.CreatedBefore) {
							t.Errorf("%s created at %v, outside [%v, %v)", j.ID, j.CreatedAt, c.f.CreatedAfter, c.f.CreatedBefore)
						}
					}
					if !reflect.DeepEqual(got, c.want) {
						t.Errorf("ListJobs(%+v) = %v, want %v", c.f, got, c.want)
					}
				})
			}
		})

		t.Run("tokens", func(t *testing.T) {
			ts, ok := st.(access.TokenStore)
			if !ok {
				t.Fatalf("%T is no access.TokenStore", st)
			}
			tok := access.Token{ID: "tok-1", Tenant: "acme", Name: "ci", Hash: access.HashToken("jm_one"), CreatedAt: at(500)}
			if err := ts.SaveToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
			unnamed := access.Token{ID: "tok-2", Tenant: "other", Hash: access.HashToken("jm_two"), CreatedAt: at(501)}
			if err := ts.SaveToken(ctx, unnamed); err != nil {
				t.Fatal(err)
			}
			for _, want := range []access.Token{tok, unnamed} {
				got, err := ts.TokenByHash(ctx, want.Hash)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("token round trip:\n got %+v\nwant %+v", got, want)
				}
			}

			// Unknown digests, including one that differs only in case, are not found.
			for _, hash := range []string{access.HashToken("jm_unknown"), strings.ToUpper(tok.Hash), ""} {
				if _, err := ts.TokenByHash(ctx, hash); !errors.Is(err, access.ErrTokenNotFound) {
					t.Fatalf("TokenByHash(%q) = %v, want ErrTokenNotFound", hash, err)
				}
			}

			// A second token with a stored digest or id is refused and changes nothing.
			if err := ts.SaveToken(ctx, access.Token{ID: "tok-3", Tenant: "evil", Name: "x", Hash: tok.Hash, CreatedAt: at(502)}); err == nil {
				t.Fatal("a second token with the same digest was accepted")
			}
			if err := ts.SaveToken(ctx, access.Token{ID: "tok-1", Tenant: "evil", Name: "x", Hash: access.HashToken("jm_three"), CreatedAt: at(502)}); err == nil {
				t.Fatal("a second token with the same id was accepted")
			}
			if got, err := ts.TokenByHash(ctx, tok.Hash); err != nil || !reflect.DeepEqual(got, tok) {
				t.Fatalf("after refused duplicates: %+v, %v; want %+v", got, err, tok)
			}
			if _, err := ts.TokenByHash(ctx, access.HashToken("jm_three")); !errors.Is(err, access.ErrTokenNotFound) {
				t.Fatalf("refused token stored: %v", err)
			}
			for _, bad := range []access.Token{
				{Tenant: "acme", Hash: access.HashToken("jm_noid")},
				{ID: "tok-4", Hash: access.HashToken("jm_notenant")},
				{ID: "tok-5", Tenant: "acme"},
			} {
				if err := ts.SaveToken(ctx, bad); err == nil {
					t.Fatalf("incomplete token %+v accepted", bad)
				}
			}

			// Inside a log subscriber's batch (which holds SQLite's only write connection) a token is saved
			// and looked up without waiting for the batch.
			late := access.Token{ID: "tok-6", Tenant: "acme", Name: "batch", Hash: access.HashToken("jm_six"), CreatedAt: at(503)}
			b.inBatch(t, func(bctx context.Context) {
				if err := ts.SaveToken(bctx, late); err != nil {
					t.Fatal(err)
				}
				lookup, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if got, err := ts.TokenByHash(lookup, tok.Hash); err != nil || got.ID != tok.ID {
					t.Fatalf("lookup during a batch: %+v, %v", got, err)
				}
			})
			if got, err := ts.TokenByHash(ctx, late.Hash); err != nil || !reflect.DeepEqual(got, late) {
				t.Fatalf("token saved in a batch: %+v, %v", got, err)
			}

			// Tokens are what authentication finds, in this store and in a store opened anew.
			tokens, err := access.NewTokens(ts, func() time.Time { return at(600) })
			if err != nil {
				t.Fatal(err)
			}
			plain, created, err := tokens.Create(ctx, "acme", "deploy")
			if err != nil {
				t.Fatal(err)
			}
			reopened, err := access.NewTokens(b.reopen(t).(access.TokenStore), time.Now)
			if err != nil {
				t.Fatal(err)
			}
			p, err := reopened.Authenticate(ctx, plain)
			if err != nil || p != (access.Principal{Tenant: "acme", TokenID: created.ID}) {
				t.Fatalf("Authenticate: %+v, %v", p, err)
			}
			if _, err := reopened.Authenticate(ctx, plain+"x"); !errors.Is(err, access.ErrUnauthenticated) {
				t.Fatalf("Authenticate with a wrong token: %v", err)
			}
		})
	})
}

// TestMigrateForward opens the store on a database that has only the first migration, with a job in it,
// as an older release left it.
func TestMigrateForward(t *testing.T) {
	// migrated is a new database of a dialect with its migrations provider, how to write ? placeholders,
	// and how to open the job store on it.
	type migrated struct {
		db         *sql.DB
		migrations *goose.Provider
		bind       func(string) string
		store      func(t *testing.T) job.Store
	}
	server := func(d Dialect, gd goose.Dialect, open func(testing.TB) *sql.DB) func(t *testing.T) migrated {
		return func(t *testing.T) migrated {
			db := open(t)
			p, err := serverMigrationProvider(db, d, gd)
			if err != nil {
				t.Fatal(err)
			}
			return migrated{db: db, migrations: p, bind: (&SQL{dialect: d}).rebind, store: func(t *testing.T) job.Store {
				st, err := NewSQL(context.Background(), db, d, Outbox{}, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = st.Close() })
				return st
			}}
		}
	}
	dialects := []struct {
		name string
		open func(t *testing.T) migrated
	}{
		{"postgres", server(DialectPostgres, goose.DialectPostgres, openPostgres)},
		{"mysql", server(DialectMySQL, goose.DialectMySQL, openMySQL)},
		{"sqlite", func(t *testing.T) migrated {
			db, err := sqlite.Open(filepath.Join(t.TempDir(), "jobmill.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			p, err := sqliteMigrations(db.Write)
			if err != nil {
				t.Fatal(err)
			}
			return migrated{db: db.Write, migrations: p, bind: func(q string) string { return q }, store: func(t *testing.T) job.Store {
				st, err := NewSQLite(context.Background(), db, nil)
				if err != nil {
					t.Fatal(err)
				}
				return st
			}}
		}},
	}
	for _, d := range dialects {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			m := d.open(t)
			db, migrations, bind := m.db, m.migrations, m.bind
			if _, err := migrations.UpTo(ctx, 1); err != nil {
				t.Fatal(err)
			}
			if v, err := migrations.GetDBVersion(ctx); err != nil || v != 1 {
				t.Fatalf("database at version %d (%v), want 1", v, err)
			}
			policy, err := json.Marshal(job.DefaultPolicy().WithDefaults())
			if err != nil {
				t.Fatal(err)
			}
			// The columns of the first migration only.
			if _, err := db.ExecContext(ctx, bind(`INSERT INTO jobs (id, tenant, type, input, state, policy, seq, error,
				created_at, updated_at, s1_started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
				"old-1", "acme", "invoices", []byte(`{"in":1}`), string(job.StateStep1Running), string(policy), 2, "",
				micros(at(1000)), micros(at(1001)), micros(at(1001))); err != nil {
				t.Fatal(err)
			}

			st := m.store(t)
			sources := migrations.ListSources()
			latest := sources[len(sources)-1].Version
			if v, err := migrations.GetDBVersion(ctx); err != nil || v != latest || latest < 2 {
				t.Fatalf("database at version %d (%v), want the latest, %d", v, err, latest)
			}
			want := &job.Job{ID: "old-1", Tenant: "acme", Type: "invoices", Input: []byte(`{"in":1}`), State: job.StateStep1Running,
				Policy: job.DefaultPolicy().WithDefaults(), Seq: 2, CreatedAt: at(1000), UpdatedAt: at(1001),
				Steps: [3]job.StepTimes{{StartedAt: at(1001)}}}
			got, err := st.GetJob(ctx, "old-1")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("job stored before the migration:\n got %+v\nwant %+v", got, want)
			}
			listed, err := st.ListJobs(ctx, job.ListFilter{Tenant: "acme", CreatedAfter: at(1000), CreatedBefore: at(1001)})
			if err != nil || len(listed) != 1 || listed[0].ID != "old-1" {
				t.Fatalf("ListJobs by creation time: %v, %v", listed, err)
			}

			// The migrated job takes a deadline, and the token table is there.
			update(t, st, func(ctx context.Context, tx job.Tx) error {
				j, err := tx.Job(ctx, "old-1")
				if err != nil {
					return err
				}
				j.Deadline = at(2000)
				return tx.SaveJob(ctx, j)
			})
			if got, err := st.GetJob(ctx, "old-1"); err != nil || !got.Deadline.Equal(at(2000)) {
				t.Fatalf("deadline of the migrated job: %v, %v", got, err)
			}
			ts := st.(access.TokenStore)
			tok := access.Token{ID: "tok-1", Tenant: "acme", Name: "ci", Hash: access.HashToken("jm_one"), CreatedAt: at(500)}
			if err := ts.SaveToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
			if got, err := ts.TokenByHash(ctx, tok.Hash); err != nil || !reflect.DeepEqual(got, tok) {
				t.Fatalf("token on the migrated database: %+v, %v", got, err)
			}

			// The down migrations undo everything after the first, keeping its data; up again, the store works.
			if _, err := migrations.DownTo(ctx, 1); err != nil {
				t.Fatalf("migrating down: %v", err)
			}
			var id string
			if err := db.QueryRowContext(ctx, `SELECT id FROM jobs`).Scan(&id); err != nil || id != "old-1" {
				t.Fatalf("after migrating down: %q, %v", id, err)
			}
			if _, err := migrations.Up(ctx); err != nil {
				t.Fatalf("migrating up again: %v", err)
			}
			if got, err := m.store(t).GetJob(ctx, "old-1"); err != nil || !got.Deadline.IsZero() {
				t.Fatalf("after migrating down and up: %+v, %v", got, err)
			}
		})
	}
}
