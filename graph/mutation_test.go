package graph_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

const userErrorFields = `userErrors { __typename code message field ... on JobError { jobId } }`

type userError struct {
	Typename string   `json:"__typename"`
	Code     string   `json:"code"`
	Message  string   `json:"message"`
	Field    []string `json:"field"`
	JobID    *string  `json:"jobId"`
}

type payload struct {
	Job        *jobView    `json:"job"`
	Retried    int         `json:"retried"`
	UserErrors []userError `json:"userErrors"`
}

// mutate runs one of the three mutations with an input and returns its payload.
func (f *fixture) mutate(tenant, name string, input map[string]any) payload {
	f.t.Helper()
	typ := map[string]string{"startJob": "StartJobInput!", "cancelJob": "CancelJobInput!", "retryFailedSubjobs": "RetryFailedSubjobsInput!"}[name]
	retried := ""
	if name == "retryFailedSubjobs" {
		retried = "retried"
	}
	q := `mutation($input: ` + typ + `) { ` + name + `(input: $input) { job { ` + jobFields + ` } ` + retried + ` ` + userErrorFields + ` } }`
	var out map[string]payload
	f.data(tenant, q, map[string]any{"input": input}, &out)
	return out[name]
}

func oneUserError(t *testing.T, p payload, typename, code string, field ...string) userError {
	t.Helper()
	if len(p.UserErrors) != 1 {
		t.Fatalf("userErrors = %+v, want one %s", p.UserErrors, code)
	}
	e := p.UserErrors[0]
	if e.Typename != typename || e.Code != code || !slices.Equal(e.Field, field) || e.Message == "" {
		t.Errorf("userError = %+v, want %s %s at %v", e, typename, code, field)
	}
	return e
}

func (f *fixture) countJobs(tenant string) int {
	f.t.Helper()
	jobs, err := f.store.ListJobs(context.Background(), job.ListFilter{Tenant: tenant})
	if err != nil {
		f.t.Fatal(err)
	}
	return len(jobs)
}

func TestStartJob(t *testing.T) {
	f := newFixture(t)
	// Variables keep numbers exactly, beyond float64 precision (object keys come back sorted).
	p := f.mutate(acme, "startJob", map[string]any{"type": synthetic.Name,
		"input": json.RawMessage(`{"subjobs":2,"seed":12345678901234567890,"tags":["a",null,true]}`)})
	if len(p.UserErrors) != 0 || p.Job == nil {
		t.Fatalf("startJob = %+v", p)
	}
	if p.Job.State != "PENDING" || p.Job.Type != synthetic.Name {
		t.Errorf("job = %+v", p.Job)
	}
	stored := f.getJob(p.Job.ID)
	if stored.Tenant != acme || string(stored.Input) != `{"seed":12345678901234567890,"subjobs":2,"tags":["a",null,true]}` {
		t.Errorf("stored job: tenant %s, input %s", stored.Tenant, stored.Input)
	}
	if string(p.Job.Input) != string(stored.Input) {
		t.Errorf("input in the payload %s, stored %s", p.Job.Input, stored.Input)
	}

	// An input written as a literal in the query.
	var lit struct{ StartJob payload }
	f.data(acme, `mutation { startJob(input: {type: "synthetic", input: {subjobs: 1, name: "x", list: [1.5, "y"]}}) { job { id input } userErrors { code } } }`, nil, &lit)
	if lit.StartJob.Job == nil || string(f.getJob(lit.StartJob.Job.ID).Input) != `{"list":[1.5,"y"],"name":"x","subjobs":1}` {
		t.Errorf("literal input: %+v", lit.StartJob)
	}
	// Without input the job gets {}.
	empty := f.mutate(acme, "startJob", map[string]any{"type": synthetic.Name})
	if empty.Job == nil || string(f.getJob(empty.Job.ID).Input) != `{}` {
		t.Errorf("no input: %+v", empty)
	}

	deadline := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	withDeadline := f.mutate(acme, "startJob", map[string]any{"type": synthetic.Name, "deadline": deadline.Format(time.RFC3339Nano)})
	if withDeadline.Job == nil || withDeadline.Job.Deadline == nil || !withDeadline.Job.Deadline.Equal(deadline) {
		t.Errorf("deadline: %+v", withDeadline.Job)
	}
}

func TestStartJobIsIdempotentPerTenant(t *testing.T) {
	f := newFixture(t)
	in := map[string]any{"type": synthetic.Name, "idempotencyKey": "order-42"}
	first := f.mutate(acme, "startJob", in)
	again := f.mutate(acme, "startJob", in)
	if first.Job == nil || again.Job == nil || first.Job.ID != again.Job.ID {
		t.Fatalf("repeated key: %+v then %+v", first.Job, again.Job)
	}
	other := f.mutate(globex, "startJob", in)
	if other.Job == nil || other.Job.ID == first.Job.ID {
		t.Errorf("another tenant's key: %+v", other.Job)
	}
	if f.countJobs(acme) != 1 || f.countJobs(globex) != 1 {
		t.Errorf("jobs: acme %d, globex %d", f.countJobs(acme), f.countJobs(globex))
	}
}

func TestStartJobReportsUserErrors(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name  string
		input map[string]any
		code  string
		field string
	}{
		{"unknown type", map[string]any{"type": "no-such-type"}, "UNKNOWN_JOB_TYPE", "type"},
		{"empty type", map[string]any{"type": ""}, "UNKNOWN_JOB_TYPE", "type"},
		{"past deadline", map[string]any{"type": synthetic.Name, "deadline": time.Now().Add(-time.Hour).Format(time.RFC3339)}, "INVALID_INPUT", "deadline"},
		{"long key", map[string]any{"type": synthetic.Name, "idempotencyKey": strings.Repeat("k", 300)}, "INVALID_INPUT", "idempotencyKey"},
		{"long type", map[string]any{"type": strings.Repeat("t", 300)}, "INVALID_INPUT", "type"},
	}
	for _, c := range cases {
		p := f.mutate(acme, "startJob", c.input)
		if p.Job != nil {
			t.Errorf("%s: a job %s", c.name, p.Job.ID)
		}
		e := oneUserError(t, p, "InputError", c.code, "input", c.field)
		if strings.Contains(e.Message, "registered:") {
			t.Errorf("%s: message %q exposes internals", c.name, e.Message)
		}
	}
	if n := f.countJobs(""); n != 0 {
		t.Errorf("%d jobs created by rejected requests", n)
	}
}

func TestCancelJob(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)

	p := f.mutate(acme, "cancelJob", map[string]any{"jobId": id, "reason": "no longer needed"})
	if len(p.UserErrors) != 0 || p.Job == nil || p.Job.State != "CANCELLED" || p.Job.Error == nil || *p.Job.Error != "no longer needed" {
		t.Fatalf("cancelJob = %+v", p)
	}
	if f.getJob(id).State != job.StateCancelled {
		t.Error("the job is not cancelled in the store")
	}

	again := f.mutate(acme, "cancelJob", map[string]any{"jobId": id})
	e := oneUserError(t, again, "JobError", "ALREADY_FINISHED", "input", "jobId")
	if e.JobID == nil || *e.JobID != id || again.Job == nil || again.Job.State != "CANCELLED" {
		t.Errorf("cancel again: %+v, job %+v", e, again.Job)
	}

	missing := f.mutate(acme, "cancelJob", map[string]any{"jobId": "no-such-job"})
	if e := oneUserError(t, missing, "JobError", "NOT_FOUND", "input", "jobId"); e.JobID == nil || *e.JobID != "no-such-job" {
		t.Errorf("unknown job: %+v", e)
	}

	long := f.mutate(acme, "cancelJob", map[string]any{"jobId": f.submit(acme, synthetic.Name), "reason": strings.Repeat("r", 2000)})
	oneUserError(t, long, "InputError", "INVALID_INPUT", "input", "reason")
}

func TestCancelJobOfAnotherTenantIsNotFound(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	p := f.mutate(globex, "cancelJob", map[string]any{"jobId": id})
	oneUserError(t, p, "JobError", "NOT_FOUND", "input", "jobId")
	if p.Job != nil {
		t.Errorf("another tenant's job in the payload: %+v", p.Job)
	}
	if st := f.getJob(id).State; st != job.StatePending {
		t.Errorf("another tenant cancelled the job: %s", st)
	}
	// A finished job of another tenant is not found either (not ALREADY_FINISHED, which would
	// confirm that it exists).
	f.check(f.app.Commands.CancelJob.Handle(t.Context(), cancelCmd(id)))
	oneUserError(t, f.mutate(globex, "cancelJob", map[string]any{"jobId": id}), "JobError", "NOT_FOUND", "input", "jobId")
}

func TestRetryFailedSubjobs(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 4)
	f.subjobFailed(id, 1, 1)
	f.subjobFailed(id, 2, 1)

	p := f.mutate(acme, "retryFailedSubjobs", map[string]any{"jobId": id})
	if len(p.UserErrors) != 0 || p.Retried != 2 || p.Job == nil {
		t.Fatalf("retryFailedSubjobs = %+v", p)
	}
	if p.Job.Counts.Failed != 0 || p.Job.Counts.InFlight != 4 || p.Job.State != "STEP2_RUNNING" {
		t.Errorf("job after retry = %+v", p.Job.Counts)
	}
	again := f.mutate(acme, "retryFailedSubjobs", map[string]any{"jobId": id})
	if len(again.UserErrors) != 0 || again.Retried != 0 {
		t.Errorf("nothing left to retry: %+v", again)
	}

	pending := f.submit(acme, synthetic.Name)
	notRetryable := f.mutate(acme, "retryFailedSubjobs", map[string]any{"jobId": pending})
	oneUserError(t, notRetryable, "JobError", "NOT_RETRYABLE", "input", "jobId")
	if notRetryable.Job == nil || notRetryable.Job.State != "PENDING" {
		t.Errorf("payload job = %+v", notRetryable.Job)
	}

	oneUserError(t, f.mutate(acme, "retryFailedSubjobs", map[string]any{"jobId": "nope"}), "JobError", "NOT_FOUND", "input", "jobId")
}

func TestRetryFailedSubjobsOfAnotherTenantIsNotFound(t *testing.T) {
	f := newFixture(t)
	id := f.submit(acme, synthetic.Name)
	f.runToStep2(id, 2)
	f.subjobFailed(id, 0, 1)
	p := f.mutate(globex, "retryFailedSubjobs", map[string]any{"jobId": id})
	oneUserError(t, p, "JobError", "NOT_FOUND", "input", "jobId")
	if p.Job != nil || p.Retried != 0 {
		t.Errorf("payload = %+v", p)
	}
	if j := f.getJob(id); j.Failed != 1 {
		t.Errorf("another tenant retried: failed = %d", j.Failed)
	}
}

func TestWithoutAuthenticationJobsGoToTheDefaultTenantAndReadsSeeAll(t *testing.T) {
	f := newFixture(t, func(c *graph.Config) { c.AuthRequired = false })
	theirs := f.submit(acme, synthetic.Name)
	p := f.mutate("", "startJob", map[string]any{"type": synthetic.Name})
	if p.Job == nil {
		t.Fatalf("startJob = %+v", p)
	}
	if tenant := f.getJob(p.Job.ID).Tenant; tenant != command.DefaultTenant {
		t.Errorf("tenant = %q, want %q", tenant, command.DefaultTenant)
	}
	if got := f.allJobs("", nil, 10); !slices.Equal(got, []string{theirs, p.Job.ID}) {
		t.Errorf("jobs = %v", got)
	}
	if c := f.mutate("", "cancelJob", map[string]any{"jobId": theirs}); c.Job == nil || c.Job.State != "CANCELLED" {
		t.Errorf("cancelJob = %+v", c)
	}
}
