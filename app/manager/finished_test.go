package manager_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/job/jobtest"
	"github.com/jobmill/jobmill/app/manager"
)

// finishRecorder is a recorder that also counts sub-jobs finishing.
type finishRecorder struct {
	*recorder
	mu                sync.Mutex
	succeeded, failed int64
}

func (r *finishRecorder) SubJobsFinished(_ string, s, f int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.succeeded += s
	r.failed += f
}

func TestSubJobObserverCountsFinalOutcomesOnce(t *testing.T) {
	f := newFixture(t, 8)
	obs := &finishRecorder{recorder: &recorder{}}
	m, err := manager.New(f.store, manager.Config{Window: 8}, f.clock.Now, obs, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	p := testPolicy()
	p.MaxAttempts, p.ToleratedFailures = 2, 10
	f.startStep2("job-f", p, 4)
	_, cmds := f.store.published()
	runs := runsOf(cmds)
	ctx := context.Background()
	steps := []struct {
		name         string
		do           func() error
		wantS, wantF int64
	}{
		{"success", func() error { return f.m.OnSubJobsReported(ctx, jobtest.Completed(completed(runs[0]))) }, 1, 0},
		{"duplicate success", func() error { return f.m.OnSubJobsReported(ctx, jobtest.Completed(completed(runs[0]))) }, 1, 0},
		{"first failure: retried, not final", func() error {
			return f.m.OnSubJobsReported(ctx, jobtest.Failed(&job.Step2SubjobFailed{JobID: "job-f", Index: runs[1].Index, Attempt: 1, Error: "x"}))
		}, 1, 0},
		{"last attempt fails", func() error {
			return f.m.OnSubJobsReported(ctx, jobtest.Failed(&job.Step2SubjobFailed{JobID: "job-f", Index: runs[1].Index, Attempt: 2, Error: "x"}))
		}, 1, 1},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		obs.mu.Lock()
		gotS, gotF := obs.succeeded, obs.failed
		obs.mu.Unlock()
		if gotS != s.wantS || gotF != s.wantF {
			t.Fatalf("after %s: %d succeeded, %d failed reported; want %d, %d", s.name, gotS, gotF, s.wantS, s.wantF)
		}
	}
}
