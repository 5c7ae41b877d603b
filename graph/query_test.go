package graph_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

const jobFields = `id type state progress seq
	counts { total succeeded failed inFlight retries timedOut duplicates late }
	steps { number state startedAt finishedAt }
	input output error deadline createdAt updatedAt endedAt`

type jobView struct {
	ID       string  `json:"id"`
	Type     string  `json:"type"`
	State    string  `json:"state"`
	Progress float64 `json:"progress"`
	Seq      int64   `json:"seq"`
	Counts   struct {
		Total, Succeeded, Failed, InFlight, Retries, TimedOut, Duplicates, Late int
	} `json:"counts"`
	Steps []struct {
		Number     int        `json:"number"`
		State      string     `json:"state"`
		StartedAt  *time.Time `json:"startedAt"`
		FinishedAt *time.Time `json:"finishedAt"`
	} `json:"steps"`
	Input     json.RawMessage `json:"input"`
	Output    json.RawMessage `json:"output"`
	Error     *string         `json:"error"`
	Deadline  *time.Time      `json:"deadline"`
	CreatedAt time.Time       `json:"createdAt"`
	UpdatedAt time.Time       `json:"updatedAt"`
	EndedAt   *time.Time      `json:"endedAt"`
}

type pageInfo struct {
	HasNextPage     bool    `json:"hasNextPage"`
	HasPreviousPage bool    `json:"hasPreviousPage"`
	StartCursor     *string `json:"startCursor"`
	EndCursor       *string `json:"endCursor"`
}

type jobConnection struct {
	Edges []struct {
		Cursor string  `json:"cursor"`
		Node   jobView `json:"node"`
	} `json:"edges"`
	PageInfo pageInfo `json:"pageInfo"`
}

func (c jobConnection) ids() []string {
	var ids []string
	for _, e := range c.Edges {
		ids = append(ids, e.Node.ID)
	}
	return ids
}

func (f *fixture) job(tenant, id string) *jobView {
	f.t.Helper()
	var out struct{ Job *jobView }
	f.data(tenant, `query($id: ID!) { job(id: $id) { `+jobFields+` } }`, map[string]any{"id": id}, &out)
	return out.Job
}

func TestJobQueryMapsTheJob(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 3)
	f.subjobSucceeded(id, 0)
	f.subjobFailed(id, 1, 1)

	got := f.job(acme, id)
	if got == nil {
		t.Fatal("job is null for its own tenant")
	}
	want := f.getJob(id)
	if got.ID != id || got.Type != synthetic.Name || got.State != "STEP2_RUNNING" {
		t.Errorf("job = %s %s %s", got.ID, got.Type, got.State)
	}
	if got.Seq != want.Version() || got.Seq < 3 {
		t.Errorf("seq = %d, want the job's version %d", got.Seq, want.Version())
	}
	if got.Progress < 0.66 || got.Progress > 0.67 {
		t.Errorf("progress = %v, want 2/3", got.Progress)
	}
	c := got.Counts
	if c.Total != 3 || c.Succeeded != 1 || c.Failed != 1 || c.InFlight != 1 {
		t.Errorf("counts = %+v", c)
	}
	states := []string{got.Steps[0].State, got.Steps[1].State, got.Steps[2].State}
	if !slices.Equal(states, []string{"FINISHED", "RUNNING", "NOT_STARTED"}) || got.Steps[1].Number != 2 {
		t.Errorf("steps = %+v", got.Steps)
	}
	if got.Steps[0].FinishedAt == nil || got.Steps[2].StartedAt != nil {
		t.Errorf("step times = %+v", got.Steps)
	}
	if string(got.Input) != `{"subjobs":3}` || string(got.Output) != "null" || got.Error != nil || got.EndedAt != nil || got.Deadline != nil {
		t.Errorf("input %s output %s error %v endedAt %v deadline %v", got.Input, got.Output, got.Error, got.EndedAt, got.Deadline)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("times %v %v, want %v %v", got.CreatedAt, got.UpdatedAt, want.CreatedAt, want.UpdatedAt)
	}

	f.subjobSucceeded(id, 2) // the last outcome closes step 2
	f.startStep3(id)
	f.completeStep3(id)
	done := f.job(acme, id)
	if done.State != "COMPLETED" || done.Progress != 1 || string(done.Output) != `{"ok":true}` || done.EndedAt == nil {
		t.Errorf("completed job = %+v", done)
	}
	for _, s := range done.Steps {
		if s.State != "FINISHED" {
			t.Errorf("step %d of a completed job is %s", s.Number, s.State)
		}
	}
}

func TestJobQueryIsNullForOtherTenantsAndUnknownIDs(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	for _, c := range []struct{ tenant, id string }{
		{globex, id},
		{acme, "no-such-job"},
		{acme, strings.Repeat("x", 10_000)},
	} {
		resp, out := f.gql(c.tenant, `query($id: ID!) { job(id: $id) { id type } }`, map[string]any{"id": c.id})
		if resp.StatusCode != http.StatusOK || len(out.Errors) > 0 || string(out.Data) != `{"job":null}` {
			t.Errorf("job %.20s as %s: status %d, data %s, errors %+v", c.id, c.tenant, resp.StatusCode, out.Data, out.Errors)
		}
	}
}

const jobsQuery = `query($filter: JobFilter, $first: Int, $after: String) {
	jobs(filter: $filter, first: $first, after: $after) {
		edges { cursor node { id type state createdAt } }
		pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
	}
}`

func (f *fixture) jobs(tenant string, vars map[string]any) jobConnection {
	f.t.Helper()
	var out struct{ Jobs jobConnection }
	f.data(tenant, jobsQuery, vars, &out)
	return out.Jobs
}

// allJobs pages through jobs pageSize at a time and checks the page information on the way.
func (f *fixture) allJobs(tenant string, filter map[string]any, pageSize int) []string {
	f.t.Helper()
	var ids []string
	var after any
	for range 100 {
		page := f.jobs(tenant, map[string]any{"filter": filter, "first": pageSize, "after": after})
		if len(page.Edges) > pageSize {
			f.t.Fatalf("page of %d edges for first %d", len(page.Edges), pageSize)
		}
		ids = append(ids, page.ids()...)
		pi := page.PageInfo
		if pi.HasPreviousPage {
			f.t.Error("hasPreviousPage is true")
		}
		if len(page.Edges) > 0 && (*pi.StartCursor != page.Edges[0].Cursor || *pi.EndCursor != page.Edges[len(page.Edges)-1].Cursor) {
			f.t.Errorf("page info %+v does not match the edges", pi)
		}
		if !pi.HasNextPage {
			return ids
		}
		if len(page.Edges) != pageSize {
			f.t.Fatalf("a page of %d edges (first %d) claims a next page", len(page.Edges), pageSize)
		}
		after = *pi.EndCursor
	}
	f.t.Fatal("paging does not end")
	return nil
}

func TestJobsPagesAndFilters(t *testing.T) {
	f := newFixture(t)
	a1 := f.submit(acme, synthetic.Name)
	g1 := f.submit(globex, synthetic.Name)
	a2 := f.submit(acme, otherType)
	a3 := f.submit(acme, synthetic.Name)
	g2 := f.submit(globex, otherType)
	a4 := f.submit(acme, synthetic.Name)
	a5 := f.submit(acme, otherType)
	f.check(f.app.Commands.CancelJob.Handle(t.Context(), cancelCmd(a4)))
	f.runToStep2(a5, 2)

	for _, size := range []int{1, 2, 5, 50} {
		if got := f.allJobs(acme, nil, size); !slices.Equal(got, []string{a1, a2, a3, a4, a5}) {
			t.Errorf("acme's jobs %d at a time = %v", size, got)
		}
	}
	if got := f.allJobs(globex, nil, 1); !slices.Equal(got, []string{g1, g2}) {
		t.Errorf("globex's jobs = %v", got)
	}

	created := f.getJob(a3).CreatedAt.Format(time.RFC3339Nano)
	for _, c := range []struct {
		name   string
		filter map[string]any
		want   []string
	}{
		{"cancelled", map[string]any{"states": []string{"CANCELLED"}}, []string{a4}},
		{"pending or cancelled", map[string]any{"states": []string{"PENDING", "CANCELLED"}}, []string{a1, a2, a3, a4}},
		{"step 2", map[string]any{"states": []string{"STEP2_RUNNING"}}, []string{a5}},
		{"empty states", map[string]any{"states": []string{}}, []string{a1, a2, a3, a4, a5}},
		{"type", map[string]any{"type": otherType}, []string{a2, a5}},
		{"created after", map[string]any{"createdAfter": created}, []string{a3, a4, a5}},
		{"created before", map[string]any{"createdBefore": created}, []string{a1, a2}},
		{"type and created after", map[string]any{"type": synthetic.Name, "createdAfter": created}, []string{a3, a4}},
		{"unknown type", map[string]any{"type": "nope"}, nil},
	} {
		if got := f.allJobs(acme, c.filter, 2); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}

	// The default page size applies without first.
	var out struct{ Jobs jobConnection }
	f.data(acme, `{ jobs { edges { node { id } } pageInfo { hasNextPage } } }`, nil, &out)
	if len(out.Jobs.Edges) != 5 || out.Jobs.PageInfo.HasNextPage {
		t.Errorf("default page: %v", out.Jobs.ids())
	}
	// An empty page has no cursors.
	empty := f.jobs(acme, map[string]any{"filter": map[string]any{"type": "nope"}})
	if len(empty.Edges) != 0 || empty.PageInfo.StartCursor != nil || empty.PageInfo.EndCursor != nil {
		t.Errorf("empty page = %+v", empty)
	}
}

func TestJobsRejectsBadPageSizesAndCursors(t *testing.T) {
	f := newFixture(t)
	f.submit(acme, synthetic.Name)
	for _, first := range []int{0, -1, 501, 100_000} {
		errs := f.gqlErrors(acme, jobsQuery, map[string]any{"first": first})
		if !errorsMention(errs, "first must be between 1 and 500") || errs[0].Extensions["code"] != "BAD_USER_INPUT" {
			t.Errorf("first %d: %+v", first, errs)
		}
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, after := range []string{"", "not base64!", b64("job:"), b64("sub:1:job-000001"), b64("something"), strings.Repeat("A", 5000)} {
		errs := f.gqlErrors(acme, jobsQuery, map[string]any{"first": 1, "after": after})
		if !errorsMention(errs, "invalid cursor") {
			t.Errorf("after %.20q: %+v", after, errs)
		}
	}
}

func TestJobsFullPagesKnowWhetherMoreFollow(t *testing.T) {
	// A page of 500 cannot fetch 501 in one query (the core caps pages at 500): the next page's
	// existence must still be right on both sides.
	f := newFixture(t, func(c *graph.Config) { c.ComplexityLimit = 100_000 })
	for range 501 {
		f.submit(acme, synthetic.Name)
	}
	full := f.jobs(acme, map[string]any{"first": 500})
	if len(full.Edges) != 500 || !full.PageInfo.HasNextPage {
		t.Fatalf("first page: %d edges, hasNextPage %v", len(full.Edges), full.PageInfo.HasNextPage)
	}
	rest := f.jobs(acme, map[string]any{"first": 500, "after": full.Edges[0].Cursor})
	if len(rest.Edges) != 500 || rest.PageInfo.HasNextPage {
		t.Errorf("the last 500: %d edges, hasNextPage %v", len(rest.Edges), rest.PageInfo.HasNextPage)
	}
	last := f.jobs(acme, map[string]any{"first": 500, "after": *full.PageInfo.EndCursor})
	if len(last.Edges) != 1 || last.PageInfo.HasNextPage {
		t.Errorf("last page: %d edges, hasNextPage %v", len(last.Edges), last.PageInfo.HasNextPage)
	}
}

const subjobsQuery = `query($job: ID!, $state: SubjobState, $first: Int, $after: String) {
	subjobs(jobId: $job, state: $state, first: $first, after: $after) {
		edges { cursor node { index state attempts lastError startedAt finishedAt } }
		pageInfo { hasNextPage endCursor }
	}
}`

type subjobConnection struct {
	Edges []struct {
		Cursor string `json:"cursor"`
		Node   struct {
			Index      int        `json:"index"`
			State      string     `json:"state"`
			Attempts   int        `json:"attempts"`
			LastError  *string    `json:"lastError"`
			StartedAt  *time.Time `json:"startedAt"`
			FinishedAt *time.Time `json:"finishedAt"`
		} `json:"node"`
	} `json:"edges"`
	PageInfo pageInfo `json:"pageInfo"`
}

func (c subjobConnection) indexes() []int {
	var out []int
	for _, e := range c.Edges {
		out = append(out, e.Node.Index)
	}
	return out
}

func (f *fixture) subjobs(tenant string, vars map[string]any) subjobConnection {
	f.t.Helper()
	var out struct{ Subjobs subjobConnection }
	f.data(tenant, subjobsQuery, vars, &out)
	return out.Subjobs
}

func TestSubjobsPagesAndFiltersByState(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	other := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 5)
	f.runToStep2(other, 2)
	f.subjobSucceeded(id, 0)
	f.subjobSucceeded(id, 3)
	f.subjobFailed(id, 1, 1)

	var got []int
	var after any
	for {
		page := f.subjobs(acme, map[string]any{"job": id, "first": 2, "after": after})
		got = append(got, page.indexes()...)
		if !page.PageInfo.HasNextPage {
			break
		}
		after = *page.PageInfo.EndCursor
	}
	if !slices.Equal(got, []int{0, 1, 2, 3, 4}) {
		t.Errorf("sub-jobs 2 at a time = %v", got)
	}

	succeeded := f.subjobs(acme, map[string]any{"job": id, "state": "SUCCEEDED"})
	if !slices.Equal(succeeded.indexes(), []int{0, 3}) {
		t.Errorf("succeeded = %v", succeeded.indexes())
	}
	if n := succeeded.Edges[0].Node; n.Attempts != 1 || n.StartedAt == nil || n.FinishedAt == nil || n.LastError != nil {
		t.Errorf("succeeded sub-job = %+v", n)
	}
	failed := f.subjobs(acme, map[string]any{"job": id, "state": "FAILED"})
	if !slices.Equal(failed.indexes(), []int{1}) || failed.Edges[0].Node.LastError == nil || *failed.Edges[0].Node.LastError != "boom" {
		t.Errorf("failed = %+v", failed)
	}
	running := f.subjobs(acme, map[string]any{"job": id, "state": "RUNNING", "first": 1})
	if !slices.Equal(running.indexes(), []int{2}) || !running.PageInfo.HasNextPage {
		t.Errorf("first running = %+v", running)
	}
	rest := f.subjobs(acme, map[string]any{"job": id, "state": "RUNNING", "after": *running.PageInfo.EndCursor})
	if !slices.Equal(rest.indexes(), []int{4}) || rest.PageInfo.HasNextPage {
		t.Errorf("other running = %+v", rest)
	}

	// A cursor of one job's sub-jobs is no cursor for another's.
	errs := f.gqlErrors(acme, subjobsQuery, map[string]any{"job": other, "after": *running.PageInfo.EndCursor})
	if !errorsMention(errs, "invalid cursor") {
		t.Errorf("foreign cursor: %+v", errs)
	}
	for _, first := range []int{0, 501} {
		if errs := f.gqlErrors(acme, subjobsQuery, map[string]any{"job": id, "first": first}); !errorsMention(errs, "first must be between 1 and 500") {
			t.Errorf("first %d: %+v", first, errs)
		}
	}
}

func TestSubjobsOfOtherTenantsAreNotFound(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 2)
	for _, c := range []struct{ tenant, job string }{{globex, id}, {acme, "no-such-job"}} {
		_, out := f.gql(c.tenant, subjobsQuery, map[string]any{"job": c.job})
		if len(out.Errors) != 1 || out.Errors[0].Message != "job not found" || out.Errors[0].Extensions["code"] != "NOT_FOUND" {
			t.Errorf("%s as %s: errors %+v", c.job, c.tenant, out.Errors)
		}
		if string(out.Data) != "null" {
			t.Errorf("%s as %s: data %s", c.job, c.tenant, out.Data)
		}
	}
}

func TestJobTypes(t *testing.T) {
	f := newFixture(t)
	var out struct {
		JobTypes []struct {
			Name                 string
			MaxAttempts          int
			SubjobTimeoutSeconds float64
			StepTimeoutSeconds   float64
		}
	}
	f.data(acme, `{ jobTypes { name maxAttempts subjobTimeoutSeconds stepTimeoutSeconds } }`, nil, &out)
	got := fmt.Sprintf("%+v", out.JobTypes)
	want := "[{Name:synthetic MaxAttempts:1 SubjobTimeoutSeconds:60 StepTimeoutSeconds:900} " +
		"{Name:synthetic-b MaxAttempts:1 SubjobTimeoutSeconds:60 StepTimeoutSeconds:900}]"
	if got != want {
		t.Errorf("jobTypes = %s, want %s", got, want)
	}
}
