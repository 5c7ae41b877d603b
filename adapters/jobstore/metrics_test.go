package jobstore

import (
	"context"
	"maps"
	"testing"

	"github.com/jobmill/jobmill/app/job"
)

// storeFigures is what the metrics endpoint reads from a store.
type storeFigures interface {
	JobCountsByState(ctx context.Context) (map[job.State]int64, error)
	SubJobsInFlight(ctx context.Context) (int64, error)
}

func TestStoreFiguresForMetrics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		st, ok := b.store.(storeFigures)
		if !ok {
			t.Fatalf("%T does not answer the metrics queries", b.store)
		}

		counts, err := st.JobCountsByState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(counts) != 0 {
			t.Fatalf("empty store: counts %v, want none", counts)
		}
		if n, err := st.SubJobsInFlight(ctx); err != nil || n != 0 {
			t.Fatalf("empty store: %d in flight (%v), want 0", n, err)
		}

		jobs := []struct {
			id       string
			state    job.State
			inFlight int64
		}{
			{"m-pending-1", job.StatePending, 0},
			{"m-pending-2", job.StatePending, 0},
			{"m-step1", job.StateStep1Running, 0},
			{"m-step2-a", job.StateStep2Running, 3},
			{"m-step2-b", job.StateStep2Running, 4},
			{"m-step3", job.StateStep3Running, 0},
			// Ended in step 2: its last in-flight value is not running anything.
			{"m-cancelled", job.StateCancelled, 5},
			{"m-completed", job.StateCompleted, 0},
			{"m-failed", job.StateFailed, 0},
		}
		for _, j := range jobs {
			mustCreate(t, b.store, j.id, "acme", "invoices")
			if j.state == job.StatePending {
				continue
			}
			update(t, b.store, func(ctx context.Context, tx job.Tx) error {
				loaded, err := tx.Job(ctx, j.id)
				if err != nil {
					return err
				}
				loaded.State, loaded.InFlight = j.state, j.inFlight
				return tx.SaveJob(ctx, loaded)
			})
		}

		counts, err = st.JobCountsByState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[job.State]int64{
			job.StatePending: 2, job.StateStep1Running: 1, job.StateStep2Running: 2, job.StateStep3Running: 1,
			job.StateCompleted: 1, job.StateFailed: 1, job.StateCancelled: 1,
		}
		if !maps.Equal(counts, want) {
			t.Fatalf("counts by state %v, want %v", counts, want)
		}
		if n, err := st.SubJobsInFlight(ctx); err != nil || n != 7 {
			t.Fatalf("%d sub-jobs in flight (%v), want 7: the two jobs in step 2 only", n, err)
		}
	})
}
