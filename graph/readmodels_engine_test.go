package graph_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/adapters/webhook"
	"github.com/jobmill/jobmill/app/jobtype"
)

// catchUp bounds the wait for the projections, which follow the engine on their own consumer groups.
const catchUp = 3 * waitFor

// eventually polls check until it holds; the test fails with what check last said if it never does.
func eventually(t *testing.T, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(catchUp)
	for {
		ok, state := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, catchUp, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) startJob(tenant, input string) string {
	f.t.Helper()
	var out struct{ StartJob payload }
	f.data(tenant, `mutation($in: JSON) { startJob(input: {type: "synthetic", input: $in}) { job { id } userErrors { code message } } }`,
		map[string]any{"in": json.RawMessage(input)}, &out)
	if out.StartJob.Job == nil {
		f.t.Fatalf("startJob: %+v", out.StartJob.UserErrors)
	}
	return out.StartJob.Job.ID
}

// waitEnded waits for a job to reach a terminal state and returns it.
func (f *fixture) waitEnded(tenant, id string) *jobView {
	f.t.Helper()
	var j *jobView
	eventually(f.t, "job "+id+" ends", func() (bool, string) {
		j = f.job(tenant, id)
		return j != nil && (j.State == "COMPLETED" || j.State == "FAILED" || j.State == "CANCELLED"), fmt.Sprintf("%+v", j)
	})
	return j
}

type jobWithStats struct {
	jobView
	Stats *statsView `json:"stats"`
}

// finalStats waits until the statistics view has applied the job's end, and returns the job with them.
func (f *fixture) finalStats(tenant, id string) jobWithStats {
	f.t.Helper()
	var j jobWithStats
	eventually(f.t, "statistics of job "+id, func() (bool, string) {
		var out struct{ Job *jobWithStats }
		f.data(tenant, `query($id: ID!) { job(id: $id) { `+jobFields+` stats { `+statsFields+` } } }`, map[string]any{"id": id}, &out)
		if out.Job == nil {
			return false, "job is null"
		}
		j = *out.Job
		s := j.Stats
		return s != nil && s.JobsCompleted+s.JobsFailed+s.JobsCancelled == 1, fmt.Sprintf("%+v", s)
	})
	return j
}

// stats runs Query.stats with args, whose variables (vars) are all of type Time.
func (f *fixture) stats(tenant, args string, vars map[string]any) statsView {
	f.t.Helper()
	var decl []string
	for name := range vars {
		decl = append(decl, "$"+name+": Time")
	}
	op := "query"
	if len(decl) > 0 {
		op += "(" + strings.Join(decl, ", ") + ")"
	}
	var out struct{ Stats statsView }
	f.data(tenant, op+` { stats`+args+` { `+statsFields+` } }`, vars, &out)
	return out.Stats
}

func sameCounters(t *testing.T, name string, s *statsView, j jobView) {
	t.Helper()
	got := []int{s.Total, s.Succeeded, s.Failed, s.Retries, s.TimedOut, s.Duplicates, s.Late}
	c := j.Counts
	want := []int{c.Total, c.Succeeded, c.Failed, c.Retries, c.TimedOut, c.Duplicates, c.Late}
	if !slices.Equal(got, want) {
		t.Errorf("%s: stats total/succeeded/failed/retries/timedOut/duplicates/late = %v, the job's counts %v", name, got, want)
	}
}

func throughputSum(s statsView) int {
	n := 0
	for _, b := range s.Throughput {
		n += b.Completed
	}
	return n
}

func TestEngineJobStats(t *testing.T) {
	f := newEngine(t)
	before := time.Now().Add(-time.Minute).UTC()
	// Every sub-job reports its success twice: the second report counts as a duplicate, or as late once
	// step 2 has closed.
	ok := f.startJob(acme, `{"subjobs": 30, "duration_ms": 2, "duplicate_rate": 1}`)
	bad := f.startJob(acme, `{"subjobs": 1, "failure_rate": 1}`)
	if j := f.waitEnded(acme, ok); j.State != "COMPLETED" {
		t.Fatalf("job %s ended %s", ok, j.State)
	}
	if j := f.waitEnded(acme, bad); j.State != "FAILED" {
		t.Fatalf("job %s ended %s", bad, j.State)
	}

	good := f.finalStats(acme, ok)
	s := good.Stats
	if s.Jobs != 1 || s.JobsCompleted != 1 || s.JobsFailed != 0 || s.JobsCancelled != 0 {
		t.Errorf("job counts = %d %d %d %d", s.Jobs, s.JobsCompleted, s.JobsFailed, s.JobsCancelled)
	}
	sameCounters(t, "completed job", s, good.jobView)
	if s.Total != 30 || s.Succeeded != 30 || s.Duplicates+s.Late != 30 {
		t.Errorf("total %d, succeeded %d, duplicates %d + late %d, want 30, 30 and 30 together", s.Total, s.Succeeded, s.Duplicates, s.Late)
	}
	if s.Attempts != 32 {
		t.Errorf("attempts = %d, want 32 (step 1, 30 sub-jobs, step 3)", s.Attempts)
	}
	if s.Run.Count != 1 || s.Run.MeanSeconds == nil || *s.Run.MeanSeconds <= 0 || *s.Run.P50Seconds != *s.Run.MeanSeconds || *s.Run.P99Seconds != *s.Run.MeanSeconds {
		t.Errorf("run = %+v, want one exact duration", s.Run)
	}
	var steps float64
	for i, st := range s.Steps {
		if st.Number != i+1 || st.Duration.Count != 1 || st.Duration.MeanSeconds == nil || *st.Duration.MeanSeconds < 0 {
			t.Errorf("step %d = %+v", i+1, st)
			continue
		}
		steps += *st.Duration.MeanSeconds
	}
	if s.Run.MeanSeconds != nil && steps > *s.Run.MeanSeconds+1e-6 {
		t.Errorf("the steps took %v s, longer than the job's %v s", steps, *s.Run.MeanSeconds)
	}
	sub := s.Subjobs
	if sub.Count != 30 || sub.P50Seconds == nil || *sub.P50Seconds < 0.002*0.99 || *sub.P50Seconds > *sub.P95Seconds || *sub.P95Seconds > *sub.P99Seconds {
		t.Errorf("sub-job durations = %+v, want 30 of at least 2 ms", sub)
	}
	if throughputSum(*s) != 30 || s.ThroughputBucketSeconds == nil || *s.ThroughputBucketSeconds < 1 {
		t.Errorf("throughput = %+v every %v s, want 30 completions", s.Throughput, s.ThroughputBucketSeconds)
	}
	if len(s.TopErrors) != 0 {
		t.Errorf("errors of a job without failures: %+v", s.TopErrors)
	}

	failed := f.finalStats(acme, bad)
	s = failed.Stats
	if s.Jobs != 1 || s.JobsFailed != 1 || s.Succeeded != 0 || s.Failed != 1 || s.Subjobs.Count != 0 || s.Subjobs.MeanSeconds != nil {
		t.Errorf("failed job's stats = %+v", s)
	}
	sameCounters(t, "failed job", s, failed.jobView)
	if len(s.TopErrors) != 1 || s.TopErrors[0].Count != 1 || !strings.Contains(s.TopErrors[0].Error, "synthetic failure") {
		t.Errorf("errors = %+v", s.TopErrors)
	}

	// The tenant's aggregate sums both jobs.
	all := f.stats(acme, "", nil)
	if all.Jobs != 2 || all.JobsCompleted != 1 || all.JobsFailed != 1 || all.Total != 31 || all.Succeeded != 30 || all.Failed != 1 ||
		all.Run.Count != 2 || all.Subjobs.Count != 30 || throughputSum(all) != 30 || len(all.TopErrors) != 1 || all.Attempts != 32+2 {
		t.Errorf("acme's stats = %+v", all)
	}
	if every := f.stats(acme, "(bucketSeconds: 60, topErrors: 1)", nil); every.ThroughputBucketSeconds == nil || *every.ThroughputBucketSeconds != 60 || throughputSum(every) != 30 {
		t.Errorf("with 60 s buckets: %+v every %v s", every.Throughput, every.ThroughputBucketSeconds)
	}
	later := time.Now().Add(time.Hour).UTC()
	for _, c := range []struct {
		args string
		vars map[string]any
		jobs int
	}{
		{`(filter: {type: "synthetic"})`, nil, 2},
		{`(filter: {type: "invoices"})`, nil, 0},
		{`(filter: {createdAfter: $after, createdBefore: $before})`, map[string]any{"after": before, "before": later}, 2},
		{`(filter: {createdAfter: $after})`, map[string]any{"after": later}, 0},
		{`(filter: {createdBefore: $before})`, map[string]any{"before": before}, 0},
	} {
		if got := f.stats(acme, c.args, c.vars); got.Jobs != c.jobs || (c.jobs == 0 && (got.Total != 0 || len(got.Throughput) != 0)) {
			t.Errorf("stats%s %v = %d jobs, total %d, want %d jobs", c.args, c.vars, got.Jobs, got.Total, c.jobs)
		}
	}

	// Another tenant's statistics hold none of it, and it cannot reach the job's.
	other := f.stats(globex, "", nil)
	if other.Jobs != 0 || other.Total != 0 || other.Succeeded != 0 || other.Run.Count != 0 || len(other.Throughput) != 0 || len(other.TopErrors) != 0 {
		t.Errorf("globex's stats = %+v", other)
	}
	_, out := f.gql(globex, `query($id: ID!) { job(id: $id) { stats { jobs } } }`, map[string]any{"id": ok})
	if len(out.Errors) > 0 || string(out.Data) != `{"job":null}` {
		t.Errorf("globex reading acme's job stats: %s %+v", out.Data, out.Errors)
	}
}

// timelinePages reads a job's whole timeline, first entries at a time.
func (f *fixture) timelinePages(tenant, id string, first int) (entries []timelineEntry, pages int) {
	f.t.Helper()
	var after *string
	for {
		var out struct {
			Job *struct{ Timeline timelineConnection }
		}
		f.data(tenant, `query($id: ID!, $first: Int, $after: String) { job(id: $id) { timeline(first: $first, after: $after) {
			edges { cursor node { `+timelineEntryFields+` } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }`,
			map[string]any{"id": id, "first": first, "after": after}, &out)
		if out.Job == nil {
			f.t.Fatalf("job %s is null", id)
		}
		page := out.Job.Timeline
		pages++
		if len(page.Edges) > first || page.PageInfo.HasPreviousPage {
			f.t.Fatalf("page %d: %d edges, pageInfo %+v", pages, len(page.Edges), page.PageInfo)
		}
		if len(page.Edges) > 0 && (*page.PageInfo.StartCursor != page.Edges[0].Cursor || *page.PageInfo.EndCursor != page.Edges[len(page.Edges)-1].Cursor) {
			f.t.Fatalf("page %d: pageInfo %+v does not match its edges", pages, page.PageInfo)
		}
		for _, e := range page.Edges {
			entries = append(entries, e.Node)
		}
		if !page.PageInfo.HasNextPage {
			return entries, pages
		}
		if len(page.Edges) != first {
			f.t.Fatalf("page %d has %d edges and a next page", pages, len(page.Edges))
		}
		after = page.PageInfo.EndCursor
	}
}

func TestEngineJobTimeline(t *testing.T) {
	f := newEngine(t)
	ok := f.startJob(acme, `{"subjobs": 30, "duration_ms": 2, "duplicate_rate": 1}`)
	bad := f.startJob(acme, `{"subjobs": 1, "failure_rate": 1}`)
	f.waitEnded(acme, ok)
	f.waitEnded(acme, bad)
	// On the SQLite log the status view applies a job's events in log order: once the job's end is in
	// its timeline, every earlier event is too.
	for _, id := range []string{ok, bad} {
		eventually(t, "timeline of "+id+" shows its end", func() (bool, string) {
			var out struct {
				Job struct{ Timeline timelineConnection }
			}
			f.data(acme, `query($id: ID!) { job(id: $id) { timeline(first: 500) { edges { node { kind } } } } }`, map[string]any{"id": id}, &out)
			edges := out.Job.Timeline.Edges
			return len(edges) > 0 && strings.HasPrefix(edges[len(edges)-1].Node.Kind, "JOB_"), fmt.Sprintf("%d entries", len(edges))
		})
	}

	entries, pages := f.timelinePages(acme, ok, 7)
	// JobStarted, Step1Completed, Step2Started, two reports of each of 30 sub-jobs, Step2Completed,
	// Step3Completed, JobCompleted.
	if len(entries) != 66 || pages != 10 {
		t.Fatalf("%d entries in %d pages, want 66 in 10", len(entries), pages)
	}
	kinds := map[string]int{}
	first := map[string]int{}
	last := map[string]int{}
	ids := map[string]bool{}
	reports := map[int]int{}
	prevSeq := 0
	for i, e := range entries {
		if e.Position != i+1 {
			t.Fatalf("entry %d has position %d: %+v", i, e.Position, e)
		}
		if ids[e.EventID] || e.EventID == "" {
			t.Errorf("event id %q repeated or empty", e.EventID)
		}
		ids[e.EventID] = true
		kinds[e.Kind]++
		if _, seen := first[e.Kind]; !seen {
			first[e.Kind] = e.Position
		}
		last[e.Kind] = e.Position
		if _, err := time.Parse(time.RFC3339Nano, e.At); err != nil {
			t.Errorf("at %q: %v", e.At, err)
		}
		switch e.Kind {
		case "SUBJOB_COMPLETED":
			if e.Step == nil || *e.Step != 2 || e.SubjobIndex == nil || e.Attempt == nil || *e.Attempt != 1 || e.Seq != nil ||
				e.DurationSeconds == nil || *e.DurationSeconds < 0.002 || e.Detail != nil {
				t.Errorf("sub-job report = %+v", e)
				continue
			}
			reports[*e.SubjobIndex]++
		case "STEP2_STARTED", "STEP2_COMPLETED", "JOB_COMPLETED":
			// The manager's events carry the job's seq, increasing in log order.
			if e.Seq == nil || *e.Seq <= prevSeq {
				t.Errorf("%s seq %v after %d", e.Kind, e.Seq, prevSeq)
			} else {
				prevSeq = *e.Seq
			}
			if e.SubjobIndex != nil || e.DurationSeconds != nil {
				t.Errorf("%s = %+v", e.Kind, e)
			}
		case "STEP1_COMPLETED", "STEP3_COMPLETED":
			if e.Seq != nil || e.Step == nil || *e.Step != int(e.Kind[4]-'0') || e.Attempt == nil || *e.Attempt != 1 {
				t.Errorf("%s = %+v", e.Kind, e)
			}
		}
	}
	want := map[string]int{"JOB_STARTED": 1, "STEP1_COMPLETED": 1, "STEP2_STARTED": 1, "SUBJOB_COMPLETED": 60,
		"STEP2_COMPLETED": 1, "STEP3_COMPLETED": 1, "JOB_COMPLETED": 1}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("kinds = %v, want %v", kinds, want)
	}
	for i := range 30 {
		if reports[i] != 2 {
			t.Errorf("sub-job %d has %d reports, want 2", i, reports[i])
		}
	}
	if js := entries[0]; js.Kind != "JOB_STARTED" || js.Step != nil || js.SubjobIndex != nil {
		t.Errorf("first entry = %+v", js)
	}
	order := []int{first["JOB_STARTED"], first["STEP1_COMPLETED"], first["STEP2_STARTED"], first["SUBJOB_COMPLETED"],
		first["STEP2_COMPLETED"], first["STEP3_COMPLETED"], first["JOB_COMPLETED"]}
	if !slices.IsSorted(order) || last["JOB_COMPLETED"] != len(entries) || last["STEP2_STARTED"] > first["SUBJOB_COMPLETED"] {
		t.Errorf("positions of the first of each kind = %v", order)
	}

	// Pages of any size give the same timeline.
	whole, pages := f.timelinePages(acme, ok, 500)
	if pages != 1 || !reflect.DeepEqual(whole, entries) {
		t.Errorf("one page of 500 differs from pages of 7 (%d pages)", pages)
	}

	failed, _ := f.timelinePages(acme, bad, 50)
	if n := len(failed); n == 0 || failed[n-1].Kind != "JOB_FAILED" || failed[n-1].Detail == nil || *failed[n-1].Detail == "" {
		t.Fatalf("failed job's timeline = %+v", failed)
	}
	var report *timelineEntry
	for i := range failed {
		if failed[i].Kind == "SUBJOB_FAILED" {
			report = &failed[i]
		}
	}
	if report == nil || report.Detail == nil || !strings.Contains(*report.Detail, "synthetic failure") || report.SubjobIndex == nil ||
		*report.SubjobIndex != 0 || report.DurationSeconds == nil {
		t.Errorf("failure report = %+v", report)
	}

	// A cursor of one job's timeline does not page another's; another tenant sees no job.
	var out struct {
		Job struct{ Timeline timelineConnection }
	}
	f.data(acme, `query($id: ID!) { job(id: $id) { timeline(first: 1) { edges { cursor } pageInfo { endCursor } } } }`, map[string]any{"id": ok}, &out)
	errs := f.gqlErrors(acme, `query($id: ID!, $after: String) { job(id: $id) { timeline(after: $after) { edges { cursor } } } }`,
		map[string]any{"id": bad, "after": *out.Job.Timeline.PageInfo.EndCursor})
	if errs[0].Extensions["code"] != "BAD_USER_INPUT" {
		t.Errorf("cursor of another job: %+v", errs)
	}
	_, resp := f.gql(globex, `query($id: ID!) { job(id: $id) { timeline { edges { cursor } } } }`, map[string]any{"id": ok})
	if len(resp.Errors) > 0 || string(resp.Data) != `{"job":null}` {
		t.Errorf("globex reading acme's timeline: %s %+v", resp.Data, resp.Errors)
	}
}

// receiver is a webhook endpoint that checks every request's signature.
type receiver struct {
	srv    *httptest.Server
	status int

	mu       sync.Mutex
	secret   string
	requests []receivedRequest
}

type receivedRequest struct {
	delivery, event string
	verifyErr       error
	body            webhook.Payload
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{status: status}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		secret := r.secret
		r.mu.Unlock()
		body, err := webhook.VerifyRequest(req, secret, 0, 0)
		got := receivedRequest{delivery: req.Header.Get(webhook.HeaderDelivery), event: req.Header.Get(webhook.HeaderEvent), verifyErr: err}
		if err == nil {
			err = json.Unmarshal(body, &got.body)
			got.verifyErr = err
		}
		r.mu.Lock()
		r.requests = append(r.requests, got)
		r.mu.Unlock()
		w.WriteHeader(r.status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.secret = s
}

// received returns the requests that carried delivery id.
func (r *receiver) received(id string) []receivedRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []receivedRequest
	for _, q := range r.requests {
		if q.delivery == id {
			out = append(out, q)
		}
	}
	return out
}

func (f *fixture) webhookDeliveries(tenant, id string) []deliveryView {
	f.t.Helper()
	var out struct{ Webhook *webhookView }
	f.data(tenant, `query($id: ID!) { webhook(id: $id) { deliveries(first: 100) { `+deliveryFields+` } } }`, map[string]any{"id": id}, &out)
	if out.Webhook == nil {
		f.t.Fatalf("webhook %s is null", id)
	}
	return out.Webhook.Deliveries
}

func TestEngineWebhookDeliveries(t *testing.T) {
	// The receivers outlive the engine, so that no attempt meets a closed server.
	accepting := newReceiver(t, http.StatusNoContent)
	failing := newReceiver(t, http.StatusInternalServerError)
	f := newEngine(t)

	created := f.createWebhook(acme, accepting.srv.URL+"/hooks", "JOB_COMPLETED")
	if created.Webhook == nil || created.Secret == nil {
		t.Fatalf("createWebhook = %+v", created)
	}
	accepting.setSecret(*created.Secret)
	hook := created.Webhook
	broken := f.createWebhook(acme, failing.srv.URL+"/hooks").Webhook
	f.createWebhook(globex, accepting.srv.URL+"/globex")

	id := f.startJob(acme, `{"subjobs": 3}`)
	f.waitEnded(acme, id)

	var done deliveryView
	eventually(t, "job.completed delivered", func() (bool, string) {
		ds := f.webhookDeliveries(acme, hook.ID)
		if len(ds) != 1 {
			return false, fmt.Sprintf("%d deliveries", len(ds))
		}
		done = ds[0]
		return done.State == "DELIVERED", fmt.Sprintf("%+v", done)
	})
	if done.EventType != "JOB_COMPLETED" || done.JobID != id || done.WebhookID != hook.ID || done.Attempts != 1 ||
		done.LastStatusCode == nil || *done.LastStatusCode != http.StatusNoContent || done.LastError != nil ||
		done.DeliveredAt == nil || done.NextAttemptAt != nil || done.Step != nil {
		t.Errorf("delivery = %+v", done)
	}
	var data struct {
		Counts struct {
			Total     int `json:"total"`
			Succeeded int `json:"succeeded"`
		} `json:"counts"`
	}
	if err := json.Unmarshal(done.Data, &data); err != nil || data.Counts.Total != 3 || data.Counts.Succeeded != 3 {
		t.Errorf("data = %s", done.Data)
	}
	got := accepting.received(done.ID)
	if len(got) != 1 || got[0].verifyErr != nil || got[0].event != "job.completed" || got[0].body.JobID != id || got[0].body.Tenant != acme {
		t.Fatalf("the receiver got %+v", got)
	}

	// Redelivery sends the same delivery again, under the same id and signed with the same secret.
	p := f.redeliver(acme, done.ID)
	if len(p.UserErrors) != 0 || p.Delivery == nil || p.Delivery.ID != done.ID || p.Delivery.State != "PENDING" || p.Delivery.Attempts != 0 {
		t.Fatalf("redeliver = %+v", p)
	}
	eventually(t, "redelivery received", func() (bool, string) {
		got = accepting.received(done.ID)
		return len(got) == 2, fmt.Sprintf("%d requests", len(got))
	})
	if got[1].verifyErr != nil || got[1].body.ID != done.ID {
		t.Errorf("redelivered request = %+v", got[1])
	}

	// The webhook whose receiver fails keeps its deliveries PENDING, retried with back-off: they cannot be
	// redelivered meanwhile.
	var retrying deliveryView
	eventually(t, "a failed attempt recorded", func() (bool, string) {
		for _, d := range f.webhookDeliveries(acme, broken.ID) {
			if d.Attempts >= 1 && d.LastStatusCode != nil {
				retrying = d
				return true, ""
			}
		}
		return false, "no attempt yet"
	})
	if retrying.State != "PENDING" || *retrying.LastStatusCode != http.StatusInternalServerError || retrying.LastError == nil ||
		!strings.Contains(*retrying.LastError, "HTTP 500") || retrying.NextAttemptAt == nil || retrying.DeliveredAt != nil {
		t.Errorf("failing delivery = %+v", retrying)
	}
	if got := failing.received(retrying.ID); len(got) == 0 {
		t.Error("the failing receiver got no request")
	}
	p = f.redeliver(acme, retrying.ID)
	oneUserError(t, p.problems(), "InputError", "DELIVERY_PENDING", "input", "deliveryId")
	if p.Delivery == nil || p.Delivery.ID != retrying.ID || p.Delivery.State != "PENDING" {
		t.Errorf("payload delivery = %+v", p.Delivery)
	}

	// Another tenant: its own webhook got nothing of acme's job, and acme's deliveries are not found.
	var theirs struct{ Webhooks []webhookView }
	f.data(globex, `{ webhooks { id deliveries { id } } }`, nil, &theirs)
	if len(theirs.Webhooks) != 1 || len(theirs.Webhooks[0].Deliveries) != 0 {
		t.Errorf("globex's webhooks = %+v", theirs.Webhooks)
	}
	oneUserError(t, f.redeliver(globex, done.ID).problems(), "InputError", "NOT_FOUND", "input", "deliveryId")
}

// activityPages reads a job's whole sub-job activity, first sub-jobs at a time, in the given state (all
// states when empty).
func (f *fixture) activityPages(tenant, id, state string, first int) (subs []activityView, pages int) {
	f.t.Helper()
	var after *string
	var st *string
	if state != "" {
		st = &state
	}
	for {
		var out struct {
			Job *struct {
				SubjobActivity activityConnection `json:"subjobActivity"`
			}
		}
		f.data(tenant, `query($id: ID!, $state: SubjobState, $first: Int, $after: String) { job(id: $id) {
			subjobActivity(state: $state, first: $first, after: $after) {
				edges { cursor node { `+activityFields+` } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }`,
			map[string]any{"id": id, "state": st, "first": first, "after": after}, &out)
		if out.Job == nil {
			f.t.Fatalf("job %s is null", id)
		}
		page := out.Job.SubjobActivity
		pages++
		if len(page.Edges) > first || page.PageInfo.HasPreviousPage {
			f.t.Fatalf("page %d: %d edges, pageInfo %+v", pages, len(page.Edges), page.PageInfo)
		}
		if len(page.Edges) > 0 && (*page.PageInfo.StartCursor != page.Edges[0].Cursor || *page.PageInfo.EndCursor != page.Edges[len(page.Edges)-1].Cursor) {
			f.t.Fatalf("page %d: pageInfo %+v does not match its edges", pages, page.PageInfo)
		}
		for _, e := range page.Edges {
			subs = append(subs, e.Node)
		}
		if !page.PageInfo.HasNextPage {
			return subs, pages
		}
		if len(page.Edges) != first {
			f.t.Fatalf("page %d has %d edges and a next page", pages, len(page.Edges))
		}
		after = page.PageInfo.EndCursor
	}
}

func TestEngineSubjobActivity(t *testing.T) {
	// Three attempts per sub-job, retried at once, and no failure fails the job: it completes with some
	// sub-jobs retried and some failed for good.
	f := newEngine(t, jobtype.Policy{
		MaxAttempts:             3,
		Backoff:                 jobtype.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1},
		ToleratedFailurePercent: 100,
	})
	const total = 60
	id := f.startJob(acme, fmt.Sprintf(`{"subjobs": %d, "failure_rate": 0.5, "seed": 7}`, total))
	j := f.waitEnded(acme, id)
	if j.State != "COMPLETED" {
		t.Fatalf("job %s ended %s", id, j.State)
	}
	c := j.Counts
	if c.Total != total || c.Failed == 0 || c.Retries <= c.Failed || c.Succeeded+c.Failed != total || c.TimedOut != 0 {
		t.Fatalf("counts = %+v, want failures, retries and %d sub-jobs ended", c, total)
	}
	// On the SQLite log the status view applies a job's events in log order: once the job's end is in
	// its timeline, every earlier event is too.
	var events int
	eventually(t, "timeline of "+id+" shows its end", func() (bool, string) {
		var out struct {
			Job struct{ Timeline timelineConnection }
		}
		f.data(acme, `query($id: ID!) { job(id: $id) { timeline(first: 500) { edges { node { kind } } } } }`, map[string]any{"id": id}, &out)
		edges := out.Job.Timeline.Edges
		events = len(edges)
		return len(edges) > 0 && strings.HasPrefix(edges[len(edges)-1].Node.Kind, "JOB_"), fmt.Sprintf("%d entries", len(edges))
	})

	subs, pages := f.activityPages(acme, id, "", 7)
	if len(subs) != total || pages != (total+6)/7 {
		t.Fatalf("%d sub-jobs in %d pages, want %d in %d", len(subs), pages, total, (total+6)/7)
	}
	byState := map[string]int{}
	var attempts, failedAttempts int
	for i, s := range subs {
		if s.Index != i {
			t.Fatalf("sub-job %d has index %d", i, s.Index)
		}
		byState[s.State]++
		attempts += s.Attempts
		failedAttempts += s.FailedAttempts
		if s.TimedOut != 0 || s.FinishedAt == nil {
			t.Errorf("sub-job %d = %+v", i, s)
		}
		if s.FinishedAt != nil {
			if _, err := time.Parse(time.RFC3339Nano, *s.FinishedAt); err != nil {
				t.Errorf("sub-job %d finishedAt %q: %v", i, *s.FinishedAt, err)
			}
		}
		switch s.State {
		case "SUCCEEDED":
			if s.Attempts < 1 || s.Attempts > 3 || s.FailedAttempts != s.Attempts-1 || s.DurationSeconds == nil || *s.DurationSeconds < 0 {
				t.Errorf("succeeded sub-job %d = %+v", i, s)
			}
			if s.FailedAttempts == 0 && (s.LastError != nil || s.LastErrorAt != nil) {
				t.Errorf("sub-job %d succeeded at once, with an error: %+v", i, s)
			}
			if s.FailedAttempts > 0 && (s.LastError == nil || s.LastErrorAt == nil ||
				!strings.Contains(*s.LastError, fmt.Sprintf("synthetic failure of sub-job %d, attempt %d", i, s.Attempts-1))) {
				t.Errorf("retried sub-job %d does not keep its last error: %+v", i, s)
			}
		case "FAILED":
			if s.Attempts != 3 || s.FailedAttempts != 3 || s.DurationSeconds != nil || s.LastErrorAt == nil || s.LastError == nil ||
				!strings.Contains(*s.LastError, fmt.Sprintf("synthetic failure of sub-job %d, attempt 3", i)) {
				t.Errorf("failed sub-job %d = %+v", i, s)
			}
		default:
			t.Errorf("sub-job %d of a completed job is %s", i, s.State)
		}
	}
	// The status view agrees with the engine's counters.
	if byState["SUCCEEDED"] != c.Succeeded || byState["FAILED"] != c.Failed {
		t.Errorf("sub-jobs by state %v, the job's counts %+v", byState, c)
	}
	if failedAttempts != c.Retries+c.Failed || attempts != total+c.Retries {
		t.Errorf("%d attempts, %d failed, with counts %+v: want total+retries and retries+failed", attempts, failedAttempts, c)
	}

	var out struct {
		Job *struct {
			ActivitySummary *activitySummaryView `json:"activitySummary"`
		}
	}
	f.data(acme, `query($id: ID!) { job(id: $id) { activitySummary { events subjobsByState { state count } } } }`, map[string]any{"id": id}, &out)
	sum := out.Job.ActivitySummary
	if sum == nil {
		t.Fatal("activitySummary is null")
	}
	want := fmt.Sprintf("%d [{SUCCEEDED %d} {FAILED %d}]", events, c.Succeeded, c.Failed)
	if got := fmt.Sprintf("%d %v", sum.Events, sum.SubjobsByState); got != want {
		t.Errorf("activitySummary = %s, want %s", got, want)
	}

	// One page of 500 gives the same sub-jobs as pages of 7; a state selects its sub-jobs only.
	whole, pages := f.activityPages(acme, id, "", 500)
	if pages != 1 || !reflect.DeepEqual(whole, subs) {
		t.Errorf("one page of 500 differs from pages of 7 (%d pages)", pages)
	}
	failed, _ := f.activityPages(acme, id, "FAILED", 2)
	var wantFailed []activityView
	for _, s := range subs {
		if s.State == "FAILED" {
			wantFailed = append(wantFailed, s)
		}
	}
	if !reflect.DeepEqual(failed, wantFailed) {
		t.Errorf("FAILED sub-jobs = %+v, want %+v", failed, wantFailed)
	}
	if none, _ := f.activityPages(acme, id, "RETRY_WAIT", 50); len(none) != 0 {
		t.Errorf("RETRY_WAIT sub-jobs of a completed job: %+v", none)
	}

	// Another tenant does not see the job: it is null, and Query.subjobs does not find it.
	_, resp := f.gql(globex, `query($id: ID!) { job(id: $id) { subjobActivity { edges { cursor } } activitySummary { events } } }`, map[string]any{"id": id})
	if len(resp.Errors) > 0 || string(resp.Data) != `{"job":null}` {
		t.Errorf("globex reading acme's sub-job activity: %s %+v", resp.Data, resp.Errors)
	}
	errs := f.gqlErrors(globex, `query($id: ID!) { subjobs(jobId: $id) { edges { cursor } } }`, map[string]any{"id": id})
	if errs[0].Extensions["code"] != "NOT_FOUND" {
		t.Errorf("globex listing acme's sub-jobs: %+v", errs)
	}
}
