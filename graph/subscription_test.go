package graph_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

const jobEventsSub = `subscription($job: ID!, $after: Int) {
	jobEvents(jobId: $job, afterSeq: $after) { seq kind step job { id state progress seq } }
}`

type jobEvent struct {
	Seq  int64  `json:"seq"`
	Kind string `json:"kind"`
	Step *int   `json:"step"`
	Job  struct {
		ID       string  `json:"id"`
		State    string  `json:"state"`
		Progress float64 `json:"progress"`
		Seq      int64   `json:"seq"`
	} `json:"job"`
}

// event reads the next jobEvents message of subscription id; done when the stream completed.
func (c *wsClient) event(id string) (jobEvent, bool) {
	c.t.Helper()
	var out struct{ JobEvents jobEvent }
	done := c.next(id, &out)
	return out.JobEvents, done
}

// expectEvent reads the next event, checks it and that its seq is greater than *last.
func expectEvent(t *testing.T, c *wsClient, id string, last *int64, kind, state string, step int) jobEvent {
	t.Helper()
	e, done := c.event(id)
	if done {
		t.Fatalf("stream completed, want %s", kind)
	}
	if e.Kind != kind || e.Job.State != state {
		t.Fatalf("event %s (job %s), want %s (job %s)", e.Kind, e.Job.State, kind, state)
	}
	if (step == 0) != (e.Step == nil) || (e.Step != nil && *e.Step != step) {
		t.Errorf("%s: step %v, want %d", kind, e.Step, step)
	}
	if e.Seq <= *last {
		t.Errorf("%s: seq %d after %d", kind, e.Seq, *last)
	}
	if e.Seq != e.Job.Seq {
		t.Errorf("%s: event seq %d, job seq %d", kind, e.Seq, e.Job.Seq)
	}
	*last = e.Seq
	return e
}

func TestJobEventsFollowAJobToTheEnd(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.startStep1(id)

	c := f.connect(acme)
	c.subscribe("1", jobEventsSub, map[string]any{"job": id})
	var seq int64
	snap := expectEvent(t, c, "1", &seq, "SNAPSHOT", "STEP1_RUNNING", 1)
	if snap.Seq != f.getJob(id).Version() {
		t.Errorf("snapshot seq %d, job version %d", snap.Seq, f.getJob(id).Version())
	}

	f.completeStep1(id, 3)
	expectEvent(t, c, "1", &seq, "STEP_STARTED", "STEP2_RUNNING", 2)
	f.subjobSucceeded(id, 0)
	p := expectEvent(t, c, "1", &seq, "PROGRESS", "STEP2_RUNNING", 2)
	if p.Job.Progress < 0.33 || p.Job.Progress > 0.34 {
		t.Errorf("progress %v, want 1/3", p.Job.Progress)
	}
	f.subjobFailed(id, 1, 1)
	expectEvent(t, c, "1", &seq, "PROGRESS", "STEP2_RUNNING", 2)
	f.subjobSucceeded(id, 2) // the last outcome closes step 2
	expectEvent(t, c, "1", &seq, "STEP_STARTED", "STEP3_RUNNING", 3)
	f.startStep3(id)
	f.completeStep3(id)
	expectEvent(t, c, "1", &seq, "COMPLETED", "COMPLETED", 0)
	if _, done := c.event("1"); !done {
		t.Fatal("the stream did not complete after COMPLETED")
	}

	// The connection stays usable after a stream ends.
	c.subscribe("2", jobEventsSub, map[string]any{"job": id})
	expectEvent(t, c, "2", new(int64), "SNAPSHOT", "COMPLETED", 0)
	if _, done := c.event("2"); !done {
		t.Fatal("a finished job's stream did not complete after its snapshot")
	}
}

func TestJobEventsResumeAfterSeq(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 2)
	current := f.getJob(id).Version()
	c := f.connect(acme)

	// Resuming from the current seq: nothing at or before it is sent again.
	c.subscribe("resume", jobEventsSub, map[string]any{"job": id, "after": current})
	// An older seq: a snapshot of the job as it is now.
	c.subscribe("older", jobEventsSub, map[string]any{"job": id, "after": current - 1})
	var olderSeq int64 = current - 1
	snap := expectEvent(t, c, "older", &olderSeq, "SNAPSHOT", "STEP2_RUNNING", 2)
	if snap.Seq != current {
		t.Errorf("snapshot seq %d, want %d", snap.Seq, current)
	}

	f.subjobSucceeded(id, 0)
	// The resumed stream's first message is the change (or, when the stream started after it, a
	// snapshot that includes it): either way newer than the seq it resumed from.
	seen := map[string]jobEvent{}
	for len(seen) < 2 {
		m := c.read()
		var out struct{ JobEvents jobEvent }
		if m.Type != "next" {
			t.Fatalf("unexpected %+v", m)
		}
		c.decodeNext(m, &out)
		if _, dup := seen[m.ID]; dup {
			t.Fatalf("two events for %s before the other stream's first", m.ID)
		}
		seen[m.ID] = out.JobEvents
	}
	if e := seen["resume"]; e.Seq <= current || e.Job.Progress != 0.5 {
		t.Errorf("resumed stream: %s seq %d progress %v (resumed after %d)", e.Kind, e.Seq, e.Job.Progress, current)
	}
	if e := seen["older"]; e.Kind != "PROGRESS" || e.Seq <= current {
		t.Errorf("stream after its snapshot: %s seq %d", e.Kind, e.Seq)
	}

	f.subjobSucceeded(id, 1)
	f.startStep3(id)
	f.completeStep3(id)
	final := f.getJob(id).Version()
	// A stream resumed at the final seq of a finished job has nothing to send and completes.
	c2 := f.connect(acme)
	c2.subscribe("done", jobEventsSub, map[string]any{"job": id, "after": final})
	if e, done := c2.event("done"); !done {
		t.Errorf("resumed at the end: got %+v, want completion", e)
	}

	errs := subscriptionErrors(t, c2, "neg", jobEventsSub, map[string]any{"job": id, "after": -1})
	if !errorsMention(errs, "afterSeq must not be negative") {
		t.Errorf("negative afterSeq: %+v", errs)
	}
}

// subscriptionErrors subscribes and returns the errors the subscription ends with.
func subscriptionErrors(t *testing.T, c *wsClient, id, q string, vars map[string]any) []gqlError {
	t.Helper()
	c.subscribe(id, q, vars)
	var errs []gqlError
	for {
		m := c.read()
		if m.ID != id {
			t.Fatalf("message for %s: %+v", m.ID, m)
		}
		switch m.Type {
		case "next":
			var r gqlResponse
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				t.Fatal(err)
			}
			if len(r.Data) > 0 && string(r.Data) != "null" {
				t.Errorf("data with the error: %s", r.Data)
			}
			errs = append(errs, r.Errors...)
		case "error":
			var list []gqlError
			if err := json.Unmarshal(m.Payload, &list); err != nil {
				t.Fatal(err)
			}
			return append(errs, list...)
		case "complete":
			if len(errs) == 0 {
				t.Fatal("subscription completed without an error")
			}
			return errs
		default:
			t.Fatalf("unexpected %+v", m)
		}
	}
}

func TestJobEventsOfAnotherTenantIsNotFound(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	c := f.connect(globex)
	for _, job := range []string{id, "no-such-job"} {
		errs := subscriptionErrors(t, c, "x-"+job, jobEventsSub, map[string]any{"job": job})
		if len(errs) != 1 || errs[0].Message != "job not found" || errs[0].Extensions["code"] != "NOT_FOUND" {
			t.Errorf("%s: %+v", job, errs)
		}
	}
}

func TestJobEventsOverServerSentEvents(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 1)

	body, _ := json.Marshal(map[string]any{"query": jobEventsSub, "variables": map[string]any{"job": id}})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+f.tokens[acme])
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, ct)
	}

	events := sseEvents(resp)
	var kinds []string
	var last int64
	for ev := range events {
		if ev.name == "complete" {
			break
		}
		var r struct {
			Data   struct{ JobEvents jobEvent }
			Errors []gqlError
		}
		if err := json.Unmarshal([]byte(ev.data), &r); err != nil || len(r.Errors) > 0 {
			t.Fatalf("event %q: %v %+v", ev.data, err, r.Errors)
		}
		e := r.Data.JobEvents
		if e.Seq <= last {
			t.Errorf("seq %d after %d", e.Seq, last)
		}
		last = e.Seq
		kinds = append(kinds, e.Kind)
		switch e.Kind {
		case "SNAPSHOT":
			f.subjobSucceeded(id, 0) // closes step 2
		case "STEP_STARTED":
			f.startStep3(id)
			f.completeStep3(id)
		}
	}
	if got := strings.Join(kinds, ","); got != "SNAPSHOT,STEP_STARTED,COMPLETED" {
		t.Errorf("events %s", got)
	}
}

type sseEvent struct{ name, data string }

// sseEvents parses a text/event-stream body; the channel closes at the end of the body.
func sseEvents(resp *http.Response) <-chan sseEvent {
	out := make(chan sseEvent)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}

const jobsChangedSub = `subscription($filter: JobFilter) { jobsChanged(filter: $filter) { id type state } }`

type changedJob struct{ ID, Type, State string }

// listener is a jobsChanged subscription. Its stream starts some time after the subscribe message,
// so listen pokes a marker job until the stream shows it; later messages about any listener's marker
// are skipped.
type listener struct {
	t      *testing.T
	f      *fixture
	c      *wsClient
	id     string
	marker string
}

func (f *fixture) listen(tenant, marker string, filter map[string]any) *listener {
	f.t.Helper()
	l := &listener{t: f.t, f: f, c: f.connect(tenant), id: "changes", marker: marker}
	f.markers = append(f.markers, marker)
	l.c.subscribe(l.id, jobsChangedSub, map[string]any{"filter": filter})
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		f.hub.Notify(marker, false)
		m, ok, err := l.c.readWithin(20 * time.Millisecond)
		if err != nil {
			f.t.Fatal(err)
		}
		if ok {
			if got := l.decode(m); got.ID != marker {
				f.t.Fatalf("first change is %s, want the marker %s", got.ID, marker)
			}
			return l
		}
	}
	f.t.Fatal("the jobsChanged stream never started")
	return nil
}

func (l *listener) decode(m wsMessage) changedJob {
	l.t.Helper()
	if m.Type != "next" || m.ID != l.id {
		l.t.Fatalf("unexpected %+v", m)
	}
	var out struct{ JobsChanged changedJob }
	l.c.decodeNext(m, &out)
	return out.JobsChanged
}

// next returns the next changed job other than the markers.
func (l *listener) next() changedJob {
	l.t.Helper()
	for {
		if j := l.decode(l.c.read()); !slices.Contains(l.f.markers, j.ID) {
			return j
		}
	}
}

func TestJobsChangedShowsOnlyTheTenantsMatchingJobs(t *testing.T) {
	f := newFixture(t)
	acmeMarker := f.submit(acme, synthetic.Name)
	globexMarker := f.submit(globex, synthetic.Name)
	otherMarker := f.submit(acme, otherType)
	f.check(f.app.Commands.CancelJob.Handle(t.Context(), cancelCmd(otherMarker)))
	all := f.listen(acme, acmeMarker, nil)
	theirs := f.listen(globex, globexMarker, nil)
	typed := f.listen(acme, otherMarker, map[string]any{"type": otherType, "states": []string{"CANCELLED"}})

	// A globex change reaches globex's stream; acme's streams must never see it: it would come
	// before the acme change that follows.
	g := f.submit(globex, synthetic.Name)
	f.hub.Notify(g, true)
	if got := theirs.next(); got.ID != g {
		t.Fatalf("globex stream: %+v", got)
	}
	a := f.submit(acme, synthetic.Name)
	f.hub.Notify(a, true)
	if got := all.next(); got.ID != a || got.State != "PENDING" {
		t.Errorf("acme stream: %+v, want %s", got, a)
	}

	// The filtered stream skips the synthetic job and a pending job of the type, and shows the
	// cancelled one.
	b := f.submit(acme, otherType)
	f.hub.Notify(b, true)
	f.check(f.app.Commands.CancelJob.Handle(t.Context(), cancelCmd(b)))
	f.hub.Notify(b, true)
	if got := typed.next(); got.ID != b || got.State != "CANCELLED" || got.Type != otherType {
		t.Errorf("filtered stream: %+v, want %s cancelled", got, b)
	}
}

func TestSubscriptionsLeaveNothingBehindWhenTheClientVanishes(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	marker := f.submit(acme, synthetic.Name)
	before := goleak.IgnoreCurrent()

	l := f.listen(acme, marker, nil)
	l.c.subscribe("events", jobEventsSub, map[string]any{"job": id})
	for m := l.c.read(); m.ID != "events"; m = l.c.read() {
		if m.ID != l.id {
			t.Fatalf("unexpected %+v", m)
		}
	}
	sse, cancelSSE := f.openSSE(acme, jobEventsSub, map[string]any{"job": id})
	if ev := <-sse; ev.name != "next" {
		t.Fatalf("SSE: %+v", ev)
	}

	l.c.close()
	cancelSSE()
	// Every goroutine the subscriptions started on the server (resolvers, hub streams, watches,
	// connection handlers) ends.
	if err := goleak.Find(before); err != nil {
		t.Error(err)
	}
}

// openSSE starts a subscription over server-sent events; cancel ends the request.
func (f *fixture) openSSE(tenant, q string, vars map[string]any) (<-chan sseEvent, context.CancelFunc) {
	f.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": q, "variables": vars})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+f.tokens[tenant])
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		cancel()
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cancel(); _ = resp.Body.Close() })
	return sseEvents(resp), func() { cancel(); _ = resp.Body.Close() }
}

func TestSubscriptionsEndWhenTheServerShutsDown(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	c := f.connect(acme)
	c.subscribe("1", jobEventsSub, map[string]any{"job": id})
	expectEvent(t, c, "1", new(int64), "SNAPSHOT", "PENDING", 0)
	sse, _ := f.openSSE(acme, jobEventsSub, map[string]any{"job": id})
	if ev := <-sse; ev.name != "next" {
		t.Fatalf("SSE: %+v", ev)
	}

	f.stop() // what the service does with the server's BaseContext on shutdown
	code, _ := c.closeStatus()
	if code != websocket.StatusNormalClosure {
		t.Errorf("close code %d", code)
	}
	for ev := range sse {
		if ev.name == "next" {
			t.Errorf("SSE event after shutdown: %+v", ev)
		}
	}
}

func TestSubscriptionsCompleteWhenTheHubCloses(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	c := f.connect(acme)
	c.subscribe("1", jobEventsSub, map[string]any{"job": id})
	expectEvent(t, c, "1", new(int64), "SNAPSHOT", "PENDING", 0)
	f.hub.Close()
	if _, done := c.event("1"); !done {
		t.Error("the stream did not complete when the hub closed")
	}
	errs := subscriptionErrors(t, c, "2", jobEventsSub, map[string]any{"job": id})
	if !errorsMention(errs, "internal server error") {
		t.Errorf("subscribing to a closed hub: %+v", errs)
	}
}
