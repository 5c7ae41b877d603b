package notify_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/notify"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 123456000, time.UTC)

// want is a notification without its data, and its data decoded.
type want struct {
	typ    notify.Type
	step   int
	tenant string
	data   map[string]any
}

func TestNotificationsMapping(t *testing.T) {
	counts := job.Counts{Total: 10, Succeeded: 9, Failed: 1, Retries: 2, TimedOut: 1, Duplicates: 3, Late: 1}
	countsJSON := map[string]any{"total": 10.0, "succeeded": 9.0, "failed": 1.0, "retries": 2.0, "timed_out": 1.0,
		"duplicates": 3.0, "late": 1.0}
	cases := []struct {
		name  string
		event job.Message
		want  []want
	}{
		{"job started: the job and step 1 start", job.JobStarted{JobID: "j", Tenant: "acme", Type: "invoices", Seq: 1, At: t0},
			[]want{
				{notify.TypeJobStarted, 0, "acme", map[string]any{"job_type": "invoices", "seq": 1.0}},
				{notify.TypeStepStarted, 1, "acme", map[string]any{}},
			}},
		{"step 1 completed (a worker report)", job.Step1Completed{JobID: "j", Attempt: 2, Total: 10, At: t0},
			[]want{{notify.TypeStepFinished, 1, "", map[string]any{"attempt": 2.0, "total": 10.0}}}},
		{"step 2 started", job.Step2Started{JobID: "j", Total: 10, Seq: 2, At: t0},
			[]want{{notify.TypeStepStarted, 2, "", map[string]any{"total": 10.0, "seq": 2.0}}}},
		{"step 2 completed: step 2 finishes and step 3 starts", job.Step2Completed{JobID: "j", Succeeded: 9, Failed: 1, Seq: 3, At: t0},
			[]want{
				{notify.TypeStepFinished, 2, "", map[string]any{"succeeded": 9.0, "failed": 1.0, "seq": 3.0}},
				{notify.TypeStepStarted, 3, "", map[string]any{"seq": 3.0}},
			}},
		{"step 3 completed", job.Step3Completed{JobID: "j", Attempt: 1, Output: []byte(`{}`), At: t0},
			[]want{{notify.TypeStepFinished, 3, "", map[string]any{"attempt": 1.0}}}},
		{"job completed", job.JobCompleted{JobID: "j", Seq: 4, At: t0, Counts: counts},
			[]want{{notify.TypeJobCompleted, 0, "", map[string]any{"seq": 4.0, "counts": countsJSON}}}},
		{"job failed", job.JobFailed{JobID: "j", Reason: "step 3 failed", Seq: 4, At: t0, Counts: counts},
			[]want{{notify.TypeJobFailed, 0, "", map[string]any{"reason": "step 3 failed", "seq": 4.0, "counts": countsJSON}}}},
		{"job cancelled", job.JobCancelled{JobID: "j", Reason: "by user", Seq: 4, At: t0, Counts: counts},
			[]want{{notify.TypeJobCancelled, 0, "", map[string]any{"reason": "by user", "seq": 4.0, "counts": countsJSON}}}},
		{"sub-job completed: nothing", job.Step2SubjobCompleted{JobID: "j", Index: 1, At: t0}, nil},
		{"sub-job failed: nothing", job.Step2SubjobFailed{JobID: "j", Index: 1, At: t0}, nil},
		{"sub-job reports: nothing", job.Step2SubjobsReported{JobID: "j", Completed: []job.Step2SubjobCompleted{{JobID: "j", At: t0}}}, nil},
		{"step attempt failed: nothing (it is retried)", job.StepFailed{JobID: "j", Step: 1, At: t0}, nil},
		{"attempt timed out: nothing", job.AttemptTimedOut{JobID: "j", Step: 2, At: t0}, nil},
		{"tick: nothing", job.Tick{JobID: "j", At: t0}, nil},
		{"a command is no event: nothing", job.RunStep1{JobID: "j"}, nil},
	}
	covered := map[reflect.Type]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			covered[reflect.TypeOf(c.event)] = true
			got := notify.Notifications(c.event)
			if len(got) != len(c.want) {
				t.Fatalf("%d notifications, want %d: %+v", len(got), len(c.want), got)
			}
			for i, n := range got {
				w := c.want[i]
				var data map[string]any
				if err := json.Unmarshal(n.Data, &data); err != nil {
					t.Fatalf("data %s: %v", n.Data, err)
				}
				if n.Type != w.typ || n.Step != w.step || n.Tenant != w.tenant || n.JobID != "j" || !n.At.Equal(t0) ||
					!reflect.DeepEqual(data, w.data) {
					t.Fatalf("notification %d: %+v (data %s), want %+v", i, n, n.Data, w)
				}
			}
		})
	}
	for _, e := range job.LogEvents() {
		if !covered[reflect.TypeOf(e)] {
			t.Errorf("event %T of the log has no case", e)
		}
	}
}

func TestNotificationKeysIdentifyWhatHappened(t *testing.T) {
	first := notify.Notifications(job.Step1Completed{JobID: "j", Attempt: 1, Total: 10, At: t0})[0]
	// A second report of step 1 (another attempt, another time) is the same notification.
	again := notify.Notifications(job.Step1Completed{JobID: "j", Attempt: 2, Total: 10, At: t0.Add(time.Second)})[0]
	if first.Key() != again.Key() || notify.DeliveryID("w1", first) != notify.DeliveryID("w1", again) {
		t.Fatalf("keys of one step finishing differ: %q, %q", first.Key(), again.Key())
	}
	distinct := map[string]notify.Notification{}
	for _, e := range []job.Message{
		job.JobStarted{JobID: "j", Tenant: "acme", At: t0}, job.Step1Completed{JobID: "j", At: t0},
		job.Step2Started{JobID: "j", At: t0}, job.Step2Completed{JobID: "j", At: t0}, job.Step3Completed{JobID: "j", At: t0},
		job.JobCompleted{JobID: "j", At: t0}, job.JobFailed{JobID: "j", At: t0}, job.JobCancelled{JobID: "j", At: t0},
		job.JobCompleted{JobID: "k", At: t0},
	} {
		for _, n := range notify.Notifications(e) {
			if other, ok := distinct[n.Key()]; ok {
				t.Fatalf("%+v and %+v share the key %q", n, other, n.Key())
			}
			distinct[n.Key()] = n
		}
	}
	if len(distinct) != 11 {
		t.Fatalf("%d distinct notifications, want 11", len(distinct))
	}
	if notify.DeliveryID("w1", first) == notify.DeliveryID("w2", first) {
		t.Fatal("deliveries of one notification to two webhooks share an id")
	}
}

func TestWebhookWants(t *testing.T) {
	n := notify.Notification{Type: notify.TypeStepFinished, JobID: "j", Step: 2, At: t0}
	cases := []struct {
		name    string
		types   []notify.Type
		created time.Time
		want    bool
	}{
		{"every type", nil, t0.Add(-time.Hour), true},
		{"its type among others", []notify.Type{notify.TypeJobCompleted, notify.TypeStepFinished}, t0.Add(-time.Hour), true},
		{"other types only", []notify.Type{notify.TypeJobCompleted, notify.TypeStepStarted}, t0.Add(-time.Hour), false},
		{"registered at the same microsecond", nil, t0, true},
		{"registered after it happened", nil, t0.Add(time.Microsecond), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := notify.Webhook{ID: "w", Tenant: "acme", URL: "https://x", EventTypes: c.types, CreatedAt: c.created}
			if got := w.Wants(n); got != c.want {
				t.Fatalf("Wants = %v, want %v", got, c.want)
			}
		})
	}
}
