package jobstore

import (
	"context"
	"errors"
	"testing"

	"github.com/jobmill/jobmill/app/job"
)

// Inside a log batch the SQL stores serve reads from memory and write once at the commit: every Update of
// the batch must still see what the earlier ones wrote, a failed Update must leave no trace, and after the
// commit the database must hold exactly what a write-through store would hold.
func TestSubJobsInABatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		st := b.store
		ctx := context.Background()
		mustCreate(t, st, "bj-1", "acme", "invoices")
		addSubJobs(t, st, "bj-1", 0, 600) // more than two blocks of reads
		eventsBefore, commandsBefore := b.outboxed(t)
		errBoom := errors.New("boom")

		b.inBatch(t, func(bctx context.Context) {
			// Dispatch 250..270 (across a block boundary) in one Update …
			updateIn(t, bctx, st, func(ctx context.Context, tx job.Tx) error {
				if _, err := tx.Job(ctx, "bj-1"); err != nil {
					return err
				}
				subs, err := tx.PendingSubJobs(ctx, "bj-1", job.Range{From: 250, To: 270})
				if err != nil {
					return err
				}
				if len(subs) != 20 {
					t.Fatalf("pending 250..270: %d sub-jobs", len(subs))
				}
				for _, s := range subs {
					s.State, s.Attempt, s.StartedAt, s.Deadline = job.SubJobRunning, 1, at(3000), at(3100)
				}
				if err := tx.SaveDispatched(ctx, subs); err != nil {
					return err
				}
				return tx.Publish(ctx, job.Effects{Commands: []job.Message{
					&job.RunSubJobs{JobID: "bj-1", Runs: []job.SubJobRun{{Index: 250, Attempt: 1}}},
				}})
			})
			// … the next Update sees them running, and completes one.
			updateIn(t, bctx, st, func(ctx context.Context, tx job.Tx) error {
				again, err := tx.PendingSubJobs(ctx, "bj-1", job.Range{From: 240, To: 280})
				if err != nil {
					return err
				}
				if len(again) != 20 || again[9].Index != 249 || again[10].Index != 270 {
					t.Fatalf("pending 240..280 after dispatch: %d sub-jobs", len(again))
				}
				s, err := tx.SubJob(ctx, "bj-1", 260)
				if err != nil {
					return err
				}
				if s.State != job.SubJobRunning || s.Attempt != 1 || !s.Deadline.Equal(at(3100)) {
					t.Fatalf("sub-job 260 in the batch: %+v", s)
				}
				s.State, s.Result, s.FinishedAt = job.SubJobSucceeded, []byte(`"ok"`), at(3050)
				return tx.SaveSubJob(ctx, s)
			})
			// A failed Update's writes and messages vanish.
			err := st.Update(bctx, func(ctx context.Context, tx job.Tx) error {
				s, err := tx.SubJob(ctx, "bj-1", 261)
				if err != nil {
					return err
				}
				s.State = job.SubJobFailed
				if err := tx.SaveSubJob(ctx, s); err != nil {
					return err
				}
				if err := tx.Publish(ctx, job.Effects{Commands: []job.Message{&job.RunSubJobs{JobID: "bj-1", Runs: []job.SubJobRun{{Index: 261, Attempt: 2}}}}}); err != nil {
					return err
				}
				return errBoom
			})
			if !errors.Is(err, errBoom) {
				t.Fatalf("failed update: %v", err)
			}
			updateIn(t, bctx, st, func(ctx context.Context, tx job.Tx) error {
				s, err := tx.SubJob(ctx, "bj-1", 261)
				if err != nil {
					return err
				}
				if s.State != job.SubJobRunning {
					t.Fatalf("sub-job 261 after a failed update: %s", s.State)
				}
				if _, err := tx.SubJob(ctx, "bj-1", 600); !errors.Is(err, job.ErrNotFound) {
					t.Fatalf("sub-job past the end: %v", err)
				}
				// The tick's query sees the batch's running sub-jobs.
				due, err := tx.DueSubJobs(ctx, "bj-1", at(3200), 100)
				if err != nil {
					return err
				}
				if len(due) != 19 {
					t.Fatalf("due at 3200: %d sub-jobs, want the 19 still running", len(due))
				}
				return nil
			})
		})

		// After the commit, the database holds what the batch staged.
		counts, err := st.CountSubJobs(ctx, "bj-1")
		if err != nil {
			t.Fatal(err)
		}
		want := map[job.SubJobState]int64{job.SubJobPending: 580, job.SubJobRunning: 19, job.SubJobSucceeded: 1}
		if len(counts) != len(want) || counts[job.SubJobPending] != 580 || counts[job.SubJobRunning] != 19 || counts[job.SubJobSucceeded] != 1 {
			t.Fatalf("counts after the batch: %v, want %v", counts, want)
		}
		update(t, st, func(ctx context.Context, tx job.Tx) error {
			s, err := tx.SubJob(ctx, "bj-1", 260)
			if err != nil {
				return err
			}
			if string(s.Result) != `"ok"` || !s.FinishedAt.Equal(at(3050)) || string(s.Input) != `{"i":260}` {
				t.Fatalf("sub-job 260 after the batch: %+v", s)
			}
			return nil
		})
		events, commands := b.outboxed(t)
		if events != eventsBefore || commands != commandsBefore+1 {
			t.Fatalf("outbox after the batch: %d events, %d commands; want %d and %d",
				events, commands, eventsBefore, commandsBefore+1)
		}
	})
}
