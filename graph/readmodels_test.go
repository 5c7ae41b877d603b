package graph_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

const (
	durationFields = `count meanSeconds p50Seconds p95Seconds p99Seconds`
	statsFields    = `jobs jobsCompleted jobsFailed jobsCancelled
		run { ` + durationFields + ` }
		steps { number duration { ` + durationFields + ` } }
		subjobs { ` + durationFields + ` }
		throughput { start completed } throughputBucketSeconds
		total succeeded failed attempts retries timedOut duplicates late
		topErrors { error count }`
	timelineEntryFields = `position eventId kind seq at step subjobIndex attempt durationSeconds detail`
	activityFields      = `index state attempts failedAttempts timedOut lastError lastErrorAt durationSeconds finishedAt`
)

type durationsView struct {
	Count       int      `json:"count"`
	MeanSeconds *float64 `json:"meanSeconds"`
	P50Seconds  *float64 `json:"p50Seconds"`
	P95Seconds  *float64 `json:"p95Seconds"`
	P99Seconds  *float64 `json:"p99Seconds"`
}

type statsView struct {
	Jobs, JobsCompleted, JobsFailed, JobsCancelled int
	Run                                            durationsView
	Steps                                          []struct {
		Number   int           `json:"number"`
		Duration durationsView `json:"duration"`
	}
	Subjobs    durationsView
	Throughput []struct {
		Start     string `json:"start"`
		Completed int    `json:"completed"`
	}
	ThroughputBucketSeconds                                                 *int
	Total, Succeeded, Failed, Attempts, Retries, TimedOut, Duplicates, Late int
	TopErrors                                                               []struct {
		Error string `json:"error"`
		Count int    `json:"count"`
	}
}

type timelineEntry struct {
	Position        int      `json:"position"`
	EventID         string   `json:"eventId"`
	Kind            string   `json:"kind"`
	Seq             *int     `json:"seq"`
	At              string   `json:"at"`
	Step            *int     `json:"step"`
	SubjobIndex     *int     `json:"subjobIndex"`
	Attempt         *int     `json:"attempt"`
	DurationSeconds *float64 `json:"durationSeconds"`
	Detail          *string  `json:"detail"`
}

type timelineConnection struct {
	Edges []struct {
		Cursor string        `json:"cursor"`
		Node   timelineEntry `json:"node"`
	} `json:"edges"`
	PageInfo pageInfo `json:"pageInfo"`
}

type activityView struct {
	Index           int      `json:"index"`
	State           string   `json:"state"`
	Attempts        int      `json:"attempts"`
	FailedAttempts  int      `json:"failedAttempts"`
	TimedOut        int      `json:"timedOut"`
	LastError       *string  `json:"lastError"`
	LastErrorAt     *string  `json:"lastErrorAt"`
	DurationSeconds *float64 `json:"durationSeconds"`
	FinishedAt      *string  `json:"finishedAt"`
}

type activityConnection struct {
	Edges []struct {
		Cursor string       `json:"cursor"`
		Node   activityView `json:"node"`
	} `json:"edges"`
	PageInfo pageInfo `json:"pageInfo"`
}

type activitySummaryView struct {
	Events         int `json:"events"`
	SubjobsByState []struct {
		State string `json:"state"`
		Count int    `json:"count"`
	} `json:"subjobsByState"`
}

func TestJobStatsAndTimelineBeforeTheViewsSawTheJob(t *testing.T) {
	// The fixture runs no consumer of the event log: the statistics and status views know no job.
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 3)
	var out struct {
		Job *struct {
			ID       string               `json:"id"`
			Stats    *statsView           `json:"stats"`
			Timeline timelineConnection   `json:"timeline"`
			Activity activityConnection   `json:"subjobActivity"`
			Summary  *activitySummaryView `json:"activitySummary"`
		}
	}
	f.data(acme, `query($id: ID!) { job(id: $id) { id stats { `+statsFields+` }
		timeline { edges { cursor node { `+timelineEntryFields+` } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }
		subjobActivity { edges { cursor node { `+activityFields+` } } pageInfo { hasNextPage startCursor endCursor } }
		activitySummary { events subjobsByState { state count } } } }`,
		map[string]any{"id": id}, &out)
	if out.Job == nil || out.Job.ID != id {
		t.Fatalf("job = %+v", out.Job)
	}
	if out.Job.Stats != nil {
		t.Errorf("stats of a job the statistics view has not seen = %+v", out.Job.Stats)
	}
	if tl := out.Job.Timeline; len(tl.Edges) != 0 || tl.PageInfo.HasNextPage || tl.PageInfo.EndCursor != nil {
		t.Errorf("timeline = %+v", tl)
	}
	if a := out.Job.Activity; len(a.Edges) != 0 || a.PageInfo.HasNextPage || a.PageInfo.EndCursor != nil {
		t.Errorf("sub-job activity = %+v", a)
	}
	if out.Job.Summary != nil {
		t.Errorf("activity summary of a job the status view has not seen = %+v", out.Job.Summary)
	}

	var agg struct{ Stats statsView }
	f.data(acme, `{ stats { `+statsFields+` } }`, nil, &agg)
	if s := agg.Stats; s.Jobs != 0 || s.Total != 0 || len(s.Throughput) != 0 || s.ThroughputBucketSeconds != nil || len(s.TopErrors) != 0 ||
		len(s.Steps) != 3 || s.Steps[1].Number != 2 || s.Steps[1].Duration.Count != 0 || s.Steps[1].Duration.MeanSeconds != nil || s.Run.P99Seconds != nil {
		t.Errorf("stats of no jobs = %+v", s)
	}
}

func TestReadModelArgumentsAreChecked(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 3)
	other := f.submit(acme, synthetic.Name)
	var subs struct{ Subjobs subjobConnection }
	f.data(acme, `query($id: ID!) { subjobs(jobId: $id, first: 1) { edges { node { index } } pageInfo { hasNextPage endCursor } } }`,
		map[string]any{"id": id}, &subs)
	subjobCursor := *subs.Subjobs.PageInfo.EndCursor
	for _, c := range []struct {
		name, query string
		vars        map[string]any
		says        string
	}{
		{"bucketSeconds 0", `{ stats(bucketSeconds: 0) { jobs } }`, nil, "bucketSeconds"},
		{"negative bucketSeconds", `{ stats(bucketSeconds: -60) { jobs } }`, nil, "bucketSeconds"},
		{"bucketSeconds over a year", `{ stats(bucketSeconds: 31622401) { jobs } }`, nil, "bucketSeconds"},
		{"topErrors 0", `{ stats(topErrors: 0) { jobs } }`, nil, "topErrors"},
		{"topErrors 101", `{ stats(topErrors: 101) { jobs } }`, nil, "topErrors"},
		{"timeline first 0", `query($id: ID!) { job(id: $id) { timeline(first: 0) { edges { cursor } } } }`, map[string]any{"id": id}, "first"},
		{"timeline first 501", `query($id: ID!) { job(id: $id) { timeline(first: 501) { edges { cursor } } } }`, map[string]any{"id": id}, "first"},
		{"timeline cursor of another job", `query($id: ID!, $after: String) { job(id: $id) { timeline(after: $after) { edges { cursor } } } }`,
			map[string]any{"id": id, "after": graph.TimelineCursor(other, 3)}, "invalid cursor"},
		{"subjobActivity first 0", `query($id: ID!) { job(id: $id) { subjobActivity(first: 0) { edges { cursor } } } }`, map[string]any{"id": id}, "first"},
		{"subjobActivity first 501", `query($id: ID!) { job(id: $id) { subjobActivity(first: 501) { edges { cursor } } } }`, map[string]any{"id": id}, "first"},
		{"subjobActivity cursor of another job", `query($id: ID!, $after: String) { job(id: $id) { subjobActivity(after: $after) { edges { cursor } } } }`,
			map[string]any{"id": other, "after": subjobCursor}, "invalid cursor"},
		{"subjobActivity cursor of a timeline", `query($id: ID!, $after: String) { job(id: $id) { subjobActivity(after: $after) { edges { cursor } } } }`,
			map[string]any{"id": id, "after": graph.TimelineCursor(id, 3)}, "invalid cursor"},
		{"timeline cursor of sub-jobs", `query($id: ID!, $after: String) { job(id: $id) { timeline(after: $after) { edges { cursor } } } }`,
			map[string]any{"id": id, "after": subjobCursor}, "invalid cursor"},
	} {
		t.Run(c.name, func(t *testing.T) {
			errs := f.gqlErrors(acme, c.query, c.vars)
			if errs[0].Extensions["code"] != "BAD_USER_INPUT" || !errorsMention(errs, c.says) {
				t.Errorf("errors %+v", errs)
			}
		})
	}
}

func TestReadModelsArePriced(t *testing.T) {
	f := newFixture(t)
	hook := f.createWebhook(acme, "https://hooks.example.com/in").Webhook
	for _, c := range []struct {
		name   string
		query  string
		vars   map[string]any
		refuse bool
	}{
		{"stats of 100 jobs", `{ jobs(first: 100) { edges { node { id stats { jobs } } } } }`, nil, false},
		{"stats of 500 jobs", `{ jobs(first: 500) { edges { node { id stats { jobs } } } } }`, nil, true},
		{"timelines of 5 jobs", `{ jobs(first: 5) { edges { node { timeline(first: 100) { edges { node { position kind at } } } } } } }`, nil, false},
		{"timelines of 50 jobs", `{ jobs(first: 50) { edges { node { timeline(first: 100) { edges { node { position kind at } } } } } } }`, nil, true},
		{"a page of 500 entries", `{ jobs(first: 1) { edges { node { timeline(first: 500) { edges { cursor node { ` + timelineEntryFields + ` } } } } } } }`, nil, false},
		{"pages of 500 entries of two jobs", `{ jobs(first: 2) { edges { node { timeline(first: 500) { edges { cursor node { ` + timelineEntryFields + ` } } } } } } }`, nil, true},
		{"a page of 500 sub-job activities", `{ jobs(first: 1) { edges { node { subjobActivity(first: 500) { edges { cursor node { ` + activityFields + ` } } } } } } }`, nil, false},
		{"pages of 500 sub-job activities of two jobs", `{ jobs(first: 2) { edges { node { subjobActivity(first: 500) { edges { cursor node { ` + activityFields + ` } } } } } } }`, nil, true},
		{"sub-job activity of 50 jobs", `{ jobs(first: 50) { edges { node { subjobActivity(first: 100) { edges { node { index state attempts } } } } } } }`, nil, true},
		{"activity summaries of 100 jobs", `{ jobs(first: 100) { edges { node { id activitySummary { events subjobsByState { state count } } } } } }`, nil, false},
		{"activity summaries of 500 jobs", `{ jobs(first: 500) { edges { node { id activitySummary { events subjobsByState { state count } } } } } }`, nil, true},
		{"throughput", `{ stats { throughput { start completed } topErrors { error count } } }`, nil, false},
		{"500 deliveries of one webhook", `query($id: ID!) { webhook(id: $id) { deliveries(first: 500) { ` + deliveryFields + ` } } }`, map[string]any{"id": hook.ID}, false},
		{"50 deliveries of every webhook", `{ webhooks { deliveries(first: 50) { ` + deliveryFields + ` } } }`, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, out := f.gql(acme, c.query, c.vars)
			refused := len(out.Errors) > 0 && out.Errors[0].Extensions["code"] == "COMPLEXITY_LIMIT_EXCEEDED"
			if refused != c.refuse {
				t.Errorf("refused %v, want %v: %+v", refused, c.refuse, out.Errors)
			}
			if !c.refuse && len(out.Errors) > 0 {
				t.Errorf("errors %+v", out.Errors)
			}
		})
	}
}

func TestReadModelsNotConfigured(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.Stats, c.Timeline, c.Webhooks = nil, nil, nil })
	id := f.submit(acme, synthetic.Name)
	for _, q := range []string{
		`{ stats { jobs } }`,
		`{ webhooks { id } }`,
		`query($id: ID!) { job(id: $id) { stats { jobs } } }`,
		`query($id: ID!) { job(id: $id) { timeline { edges { cursor } } } }`,
		`query($id: ID!) { job(id: $id) { subjobActivity { edges { cursor } } } }`,
		`query($id: ID!) { job(id: $id) { activitySummary { events } } }`,
		`mutation { createWebhook(input: {url: "https://hooks.example.com/in"}) { secret } }`,
		`mutation { redeliverWebhookDelivery(input: {deliveryId: "d"}) { delivery { id } } }`,
	} {
		_, out := f.gql(acme, q, map[string]any{"id": id})
		if len(out.Errors) == 0 || out.Errors[0].Extensions["code"] != "UNAVAILABLE" || !strings.Contains(out.Errors[0].Message, "not available") {
			t.Errorf("%s: %s %+v", q, out.Data, out.Errors)
		}
	}
	// The job itself is still there, with stats null.
	var out struct {
		Job struct {
			ID    string     `json:"id"`
			Stats *statsView `json:"stats"`
		}
	}
	_, resp := f.gql(acme, `query($id: ID!) { job(id: $id) { id stats { jobs } } }`, map[string]any{"id": id})
	if err := json.Unmarshal(resp.Data, &out); err != nil || out.Job.ID != id || out.Job.Stats != nil {
		t.Errorf("job = %s (%v)", resp.Data, err)
	}
}
