package graph_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
	"github.com/jobmill/jobmill/service"
)

// newEngine runs the whole service (manager, workers, ticker, live feed from the event log) on an
// SQLite file and serves its HTTP handler; the GraphQL endpoint is at /query.
// A policy, when given, replaces the synthetic type's (one attempt per sub-job).
func newEngine(t *testing.T, policy ...jobtype.Policy) *fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.SQLite.Path = filepath.Join(dir, "jobmill.db")
	cfg.OutboxDir = filepath.Join(dir, "outbox")
	cfg.Listen = "127.0.0.1:0"
	cfg.Workers = 4
	cfg.Auth = config.AuthRequired

	types := jobtype.NewRegistry()
	// One attempt per sub-job: a job whose sub-jobs fail, fails at once.
	p := jobtype.Policy{MaxAttempts: 1}
	if len(policy) > 0 {
		p = policy[0]
	}
	types.MustRegister(synthetic.Definition(p))
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))

	ctx, cancel := context.WithCancel(context.Background())
	svc, err := service.New(ctx, cfg, service.Options{Types: types, Logger: logger})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	select {
	case <-svc.Running():
	case err := <-runErr:
		cancel()
		t.Fatalf("service stopped: %v", err)
	case <-time.After(waitFor):
		cancel()
		t.Fatal("service did not start")
	}
	h, err := svc.HTTPHandler()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(func() {
		cancel()
		srv.Close()
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("service Run: %v", err)
			}
		case <-time.After(waitFor):
			t.Error("service Run did not return")
		}
		if err := svc.Close(); err != nil {
			t.Errorf("service Close: %v", err)
		}
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})

	f := &fixture{t: t, srv: srv, endpoint: srv.URL + "/query", logs: logs, tokens: map[string]string{}}
	for _, tenant := range []string{acme, globex} {
		tok, _, err := svc.App.Tokens.Create(ctx, tenant, "test")
		if err != nil {
			t.Fatal(err)
		}
		f.tokens[tenant] = tok
	}
	return f
}

func TestEngineJobFollowedOverTheAPI(t *testing.T) {
	f := newEngine(t)
	start := func(input string) string {
		t.Helper()
		var out struct{ StartJob payload }
		f.data(acme, `mutation($in: JSON) { startJob(input: {type: "synthetic", input: $in}) { job { id } userErrors { code message } } }`,
			map[string]any{"in": json.RawMessage(input)}, &out)
		if out.StartJob.Job == nil {
			t.Fatalf("startJob: %+v", out.StartJob.UserErrors)
		}
		return out.StartJob.Job.ID
	}
	ok := start(`{"subjobs": 40, "duration_ms": 2}`)
	bad := start(`{"subjobs": 5, "failure_rate": 1}`)

	c := f.connect(acme)
	c.subscribe("ok", jobEventsSub, map[string]any{"job": ok})
	c.subscribe("bad", jobEventsSub, map[string]any{"job": bad})
	last := map[string]jobEvent{}
	counts := map[string]int{}
	for done := 0; done < 2; {
		m := c.read()
		switch m.Type {
		case "complete":
			done++
			continue
		case "next":
		default:
			t.Fatalf("unexpected %+v", m)
		}
		var out struct{ JobEvents jobEvent }
		c.decodeNext(m, &out)
		e := out.JobEvents
		prev, seen := last[m.ID]
		if !seen && e.Kind != "SNAPSHOT" {
			t.Errorf("%s: first event %s, want SNAPSHOT", m.ID, e.Kind)
		}
		if seen && e.Seq <= prev.Seq {
			t.Errorf("%s: seq %d after %d", m.ID, e.Seq, prev.Seq)
		}
		if seen && (prev.Kind == "COMPLETED" || prev.Kind == "FAILED") {
			t.Errorf("%s: %s after the stream's terminal event", m.ID, e.Kind)
		}
		last[m.ID] = e
		counts[m.ID]++
	}
	if e := last["ok"]; e.Kind != "COMPLETED" || e.Job.State != "COMPLETED" || e.Job.Progress != 1 {
		t.Errorf("ok job ended with %+v", e)
	}
	if e := last["bad"]; e.Kind != "FAILED" || e.Job.State != "FAILED" {
		t.Errorf("failing job ended with %+v", e)
	}
	t.Logf("events: %v", counts)

	// The queries agree with the streams, and another tenant sees none of it.
	var jobs struct{ Jobs jobConnection }
	f.data(acme, `{ jobs { edges { node { id state } } } }`, nil, &jobs)
	states := map[string]string{}
	for _, e := range jobs.Jobs.Edges {
		states[e.Node.ID] = e.Node.State
	}
	if states[ok] != "COMPLETED" || states[bad] != "FAILED" || len(states) != 2 {
		t.Errorf("jobs = %v", states)
	}
	var subs struct{ Subjobs subjobConnection }
	f.data(acme, `query($id: ID!) { subjobs(jobId: $id, state: SUCCEEDED, first: 100) { edges { node { index } } pageInfo { hasNextPage } } }`,
		map[string]any{"id": ok}, &subs)
	if len(subs.Subjobs.Edges) != 40 {
		t.Errorf("%d succeeded sub-jobs, want 40", len(subs.Subjobs.Edges))
	}
	f.data(globex, `{ jobs { edges { node { id state } } } }`, nil, &jobs)
	if len(jobs.Jobs.Edges) != 0 {
		t.Errorf("globex sees %d jobs", len(jobs.Jobs.Edges))
	}
	if errs := subscriptionErrors(t, f.connect(globex), "x", jobEventsSub, map[string]any{"job": ok}); !errorsMention(errs, "job not found") {
		t.Errorf("globex subscribing: %+v", errs)
	}
}
