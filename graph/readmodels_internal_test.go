package graph

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
	"github.com/jobmill/jobmill/graph/model"
)

func TestTimelineKindsMapOneToOne(t *testing.T) {
	cases := []struct {
		kind string
		want model.TimelineEventKind
	}{
		{timeline.KindJobStarted, model.TimelineEventKindJobStarted},
		{timeline.KindStep1Completed, model.TimelineEventKindStep1Completed},
		{timeline.KindStep2Started, model.TimelineEventKindStep2Started},
		{timeline.KindStep2SubjobCompleted, model.TimelineEventKindSubjobCompleted},
		{timeline.KindStep2SubjobFailed, model.TimelineEventKindSubjobFailed},
		{timeline.KindStep2Completed, model.TimelineEventKindStep2Completed},
		{timeline.KindStep3Completed, model.TimelineEventKindStep3Completed},
		{timeline.KindStepFailed, model.TimelineEventKindStepFailed},
		{timeline.KindAttemptTimedOut, model.TimelineEventKindAttemptTimedOut},
		{timeline.KindJobCompleted, model.TimelineEventKindJobCompleted},
		{timeline.KindJobFailed, model.TimelineEventKindJobFailed},
		{timeline.KindJobCancelled, model.TimelineEventKindJobCancelled},
	}
	seen := map[model.TimelineEventKind]bool{}
	for _, c := range cases {
		got, err := toTimelineEntry(timeline.Entry{Pos: 1, Kind: c.kind, Index: timeline.NoSubJob})
		if err != nil {
			t.Errorf("%s: %v", c.kind, err)
			continue
		}
		if got.Kind != c.want {
			t.Errorf("%s maps to %s, want %s", c.kind, got.Kind, c.want)
		}
		seen[got.Kind] = true
	}
	for _, k := range model.AllTimelineEventKind {
		if !seen[k] {
			t.Errorf("no event kind maps to %s", k)
		}
	}
	if len(timelineKinds) != len(cases) {
		t.Errorf("%d kinds mapped, %d expected", len(timelineKinds), len(cases))
	}
	if _, err := toTimelineEntry(timeline.Entry{Pos: 7, Kind: "SomethingNew"}); err == nil {
		t.Error("an unknown kind was accepted")
	}
}

func TestWebhookEventTypesMapOneToOne(t *testing.T) {
	cases := []struct {
		schema model.WebhookEventType
		core   notify.Type
	}{
		{model.WebhookEventTypeJobStarted, "job.started"},
		{model.WebhookEventTypeStepStarted, "step.started"},
		{model.WebhookEventTypeStepFinished, "step.finished"},
		{model.WebhookEventTypeJobCompleted, "job.completed"},
		{model.WebhookEventTypeJobFailed, "job.failed"},
		{model.WebhookEventTypeJobCancelled, "job.cancelled"},
	}
	for _, c := range cases {
		if got := webhookTypes[c.schema]; got != c.core {
			t.Errorf("%s maps to %q, want %q", c.schema, got, c.core)
		}
		back, err := toWebhookEventType(c.core)
		if err != nil || back != c.schema {
			t.Errorf("%q maps back to %s (%v), want %s", c.core, back, err, c.schema)
		}
	}
	if len(cases) != len(model.AllWebhookEventType) || len(cases) != len(notify.Types()) || len(webhookTypes) != len(cases) {
		t.Errorf("%d cases, %d schema values, %d core types, %d mapped", len(cases), len(model.AllWebhookEventType), len(notify.Types()), len(webhookTypes))
	}
	for _, typ := range notify.Types() {
		if _, err := toWebhookEventType(typ); err != nil {
			t.Error(err)
		}
	}
	if _, err := toWebhookEventType("job.exploded"); err == nil {
		t.Error("an unknown notification type was accepted")
	}
}

func TestToJobStatsMapsEveryField(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d := func(base time.Duration) stats.Durations {
		return stats.Durations{Count: int64(base / time.Millisecond), Mean: base, P50: base + 1*time.Millisecond, P95: base + 2*time.Millisecond, P99: base + 3*time.Millisecond}
	}
	st := stats.Stats{
		Jobs: 11, JobsCompleted: 5, JobsFailed: 4, JobsCancelled: 1,
		Run:         d(9000 * time.Millisecond),
		Steps:       [3]stats.Durations{d(100 * time.Millisecond), d(2000 * time.Millisecond), d(300 * time.Millisecond)},
		SubJobs:     d(40 * time.Millisecond),
		Throughput:  []stats.Bucket{{Start: start, Completed: 3}, {Start: start.Add(5 * time.Second), Completed: 0}, {Start: start.Add(10 * time.Second), Completed: 8}},
		BucketWidth: 5 * time.Second,
		Total:       101, Succeeded: 90, Failed: 7, Attempts: 130, Retries: 12, TimedOut: 3, Duplicates: 6, Late: 2,
		TopErrors: []stats.ErrorCount{{Error: "boom", Count: 9}, {Error: "bang", Count: 1}},
	}
	got := toJobStats(st)
	counters := []int{got.Jobs, got.JobsCompleted, got.JobsFailed, got.JobsCancelled, got.Total, got.Succeeded, got.Failed,
		got.Attempts, got.Retries, got.TimedOut, got.Duplicates, got.Late}
	if want := []int{11, 5, 4, 1, 101, 90, 7, 130, 12, 3, 6, 2}; !slices.Equal(counters, want) {
		t.Errorf("counters = %v, want %v", counters, want)
	}
	checkDurations := func(name string, got *model.DurationStats, base float64) {
		t.Helper()
		if got.Count != int(base*1000) || got.MeanSeconds == nil || got.P50Seconds == nil || got.P95Seconds == nil || got.P99Seconds == nil {
			t.Fatalf("%s = %+v", name, got)
		}
		figures := []float64{*got.MeanSeconds, *got.P50Seconds, *got.P95Seconds, *got.P99Seconds}
		want := []float64{base, base + 0.001, base + 0.002, base + 0.003}
		for i := range figures {
			if diff := figures[i] - want[i]; diff > 1e-9 || diff < -1e-9 {
				t.Errorf("%s = %v, want %v (seconds)", name, figures, want)
				break
			}
		}
	}
	checkDurations("run", got.Run, 9)
	checkDurations("subjobs", got.Subjobs, 0.04)
	if len(got.Steps) != 3 {
		t.Fatalf("steps = %+v", got.Steps)
	}
	for i, base := range []float64{0.1, 2, 0.3} {
		if got.Steps[i].Number != i+1 {
			t.Errorf("step %d numbered %d", i+1, got.Steps[i].Number)
		}
		checkDurations("step", got.Steps[i].Duration, base)
	}
	if got.ThroughputBucketSeconds == nil || *got.ThroughputBucketSeconds != 5 || len(got.Throughput) != 3 {
		t.Fatalf("throughput = %+v every %v s", got.Throughput, got.ThroughputBucketSeconds)
	}
	for i, b := range st.Throughput {
		if !got.Throughput[i].Start.Equal(b.Start) || got.Throughput[i].Completed != int(b.Completed) {
			t.Errorf("bucket %d = %+v, want %+v", i, got.Throughput[i], b)
		}
	}
	if len(got.TopErrors) != 2 || got.TopErrors[0].Error != "boom" || got.TopErrors[0].Count != 9 || got.TopErrors[1].Error != "bang" {
		t.Errorf("top errors = %+v", got.TopErrors)
	}
}

func TestToJobStatsOfNothing(t *testing.T) {
	got := toJobStats(stats.Stats{})
	if got.Run.Count != 0 || got.Run.MeanSeconds != nil || got.Run.P99Seconds != nil || got.Subjobs.P50Seconds != nil {
		t.Errorf("empty durations = %+v %+v", got.Run, got.Subjobs)
	}
	if len(got.Steps) != 3 || got.Steps[2].Duration.MeanSeconds != nil {
		t.Errorf("steps = %+v", got.Steps)
	}
	// Lists are empty, never null: the schema declares them non-null.
	if got.Throughput == nil || got.TopErrors == nil || got.ThroughputBucketSeconds != nil {
		t.Errorf("throughput %v every %v, top errors %v", got.Throughput, got.ThroughputBucketSeconds, got.TopErrors)
	}
}

func TestToTimelineEntry(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	report, err := toTimelineEntry(timeline.Entry{Pos: 4, EventID: "e4", Kind: timeline.KindStep2SubjobFailed, At: at, Step: 2,
		Index: 0, Attempt: 2, Duration: 1500 * time.Millisecond, Detail: "boom"})
	if err != nil {
		t.Fatal(err)
	}
	if report.Position != 4 || report.EventID != "e4" || report.Seq != nil || !report.At.Equal(at) || report.At.Location() != time.UTC {
		t.Errorf("report = %+v", report)
	}
	if report.Step == nil || *report.Step != 2 || report.SubjobIndex == nil || *report.SubjobIndex != 0 ||
		report.Attempt == nil || *report.Attempt != 2 || report.DurationSeconds == nil || *report.DurationSeconds != 1.5 ||
		report.Detail == nil || *report.Detail != "boom" {
		t.Errorf("report = %+v", report)
	}
	end, err := toTimelineEntry(timeline.Entry{Pos: 9, EventID: "e9", Kind: timeline.KindJobCompleted, Seq: 41, At: at, Index: timeline.NoSubJob})
	if err != nil {
		t.Fatal(err)
	}
	if end.Seq == nil || *end.Seq != 41 || end.Step != nil || end.SubjobIndex != nil || end.Attempt != nil || end.DurationSeconds != nil || end.Detail != nil {
		t.Errorf("job end = %+v", end)
	}
}

func TestTimelineCursors(t *testing.T) {
	c := timelineCursor("job-1", 17)
	if pos, err := timelineAfter("job-1", &c); err != nil || pos != 17 {
		t.Errorf("round trip = %d, %v", pos, err)
	}
	if pos, err := timelineAfter("job-1", nil); err != nil || pos != 0 {
		t.Errorf("first page = %d, %v", pos, err)
	}
	for name, bad := range map[string]string{
		"another job's":  timelineCursor("job-2", 17),
		"a sub-job's":    subjobCursor("job-1", 17),
		"a jobs list's":  jobCursor("job-1"),
		"position 0":     encodeCursor("tl:0:job-1"),
		"not a number":   encodeCursor("tl:x:job-1"),
		"not base64":     "%%%",
		"an empty one":   "",
		"without a job":  encodeCursor("tl:3"),
		"negative":       encodeCursor("tl:-3:job-1"),
		"a huge one":     encodeCursor("tl:99999999999999999999:job-1"),
		"with no prefix": encodeCursor("17:job-1"),
	} {
		if _, err := timelineAfter("job-1", &bad); err == nil {
			t.Errorf("%s cursor accepted", name)
		}
	}
}

func TestToWebhookDelivery(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	d := notify.Delivery{
		ID: "d1", WebhookID: "w1",
		Notification: notify.Notification{Type: notify.TypeStepFinished, JobID: "j1", Tenant: "acme", Step: 2, At: at, Data: json.RawMessage(`{"succeeded":3}`)},
		State:        notify.DeliveryDead, Attempts: 8, LastError: "HTTP 500", LastStatusCode: 500, CreatedAt: at, UpdatedAt: at.Add(time.Minute),
	}
	got, err := toWebhookDelivery(d)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "d1" || got.WebhookID != "w1" || got.EventType != model.WebhookEventTypeStepFinished || got.JobID != "j1" ||
		got.Step == nil || *got.Step != 2 || string(got.Data) != `{"succeeded":3}` || got.State != model.WebhookDeliveryStateDead ||
		got.Attempts != 8 || got.LastError == nil || *got.LastError != "HTTP 500" || got.LastStatusCode == nil || *got.LastStatusCode != 500 ||
		got.NextAttemptAt != nil || got.DeliveredAt != nil || !got.UpdatedAt.Equal(at.Add(time.Minute)) {
		t.Errorf("delivery = %+v", got)
	}

	d.Type, d.Step, d.Data, d.State, d.LastError, d.LastStatusCode = notify.TypeJobStarted, 0, nil, notify.DeliveryPending, "", 0
	d.NextAttemptAt = at
	got, err = toWebhookDelivery(d)
	if err != nil {
		t.Fatal(err)
	}
	if got.Step != nil || string(got.Data) != `{}` || got.LastError != nil || got.LastStatusCode != nil || got.NextAttemptAt == nil {
		t.Errorf("pending delivery = %+v", got)
	}
	for _, s := range []notify.DeliveryState{notify.DeliveryPending, notify.DeliveryDelivered, notify.DeliveryDead} {
		d.State = s
		if got, err := toWebhookDelivery(d); err != nil || string(got.State) != string(s) {
			t.Errorf("state %s: %v, %v", s, got, err)
		}
	}
	d.State = "LOST"
	if _, err := toWebhookDelivery(d); err == nil {
		t.Error("an unknown delivery state was accepted")
	}
}
