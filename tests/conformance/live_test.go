package conformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/live"
	"github.com/jobmill/jobmill/config"
)

// testLiveViewFromAnotherProcess: a process with only the api role follows a job that another process
// (manager, workers, ticker) runs. Its updates can come only from the event log.
func testLiveViewFromAnotherProcess(t *testing.T, c combo) {
	e := newEnv(t, c)
	engineEnv := *e
	engineEnv.cfg.Roles = []string{config.RoleManager, config.RoleWorker, config.RoleTicker}
	apiEnv := *e
	apiEnv.cfg.Roles = []string{config.RoleAPI}
	apiEnv.cfg.Workers = 0

	typ := newCounting(t, "conformance-live", 2*time.Millisecond)
	startEngine(t, &engineEnv, typ.registry, nil)
	api := startEngine(t, &apiEnv, typ.registry, nil)

	const n = 300
	id := api.submit(typ.name, countInput{N: n})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	updates, err := api.svc.App.Live.Subscribe(ctx, id, "conformance", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []live.Update
	for u := range updates {
		got = append(got, u)
	}
	if ctx.Err() != nil {
		t.Fatalf("stream did not complete within %s; got %d updates", waitLimit, len(got))
	}
	if len(got) < 2 || got[0].Kind != live.KindSnapshot {
		t.Fatalf("updates = %v, want a snapshot and at least one change", kinds(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("seq %d after %d: not increasing (%v)", got[i].Seq, got[i-1].Seq, kinds(got))
		}
	}
	last := got[len(got)-1]
	if last.Kind != live.KindCompleted || last.Job.State != job.StateCompleted || last.Job.Succeeded != n {
		t.Fatalf("last update %s in state %s with %d succeeded, want COMPLETED with %d", last.Kind, last.Job.State, last.Job.Succeeded, n)
	}
	// Another tenant cannot follow the job.
	if _, err := api.svc.App.Live.Subscribe(ctx, id, "someone-else", 0); err == nil {
		t.Fatal("another tenant subscribed to the job")
	}
}

func kinds(us []live.Update) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = fmt.Sprintf("%s@%d", u.Kind, u.Seq)
	}
	return out
}
