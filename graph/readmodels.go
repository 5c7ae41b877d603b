package graph

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
	"github.com/jobmill/jobmill/graph/model"
)

// Conversions of the read models (statistics, status timeline, webhooks) to the schema's types. Unlike
// the job's states, their names differ from the schema's enums, so each has an explicit table.

const (
	// maxTopErrors bounds Query.stats(topErrors): an ended job keeps its stats.KeptErrors most frequent
	// texts, so more would not be more exact.
	maxTopErrors = stats.KeptErrors
	// maxBucketSeconds bounds Query.stats(bucketSeconds) to a year: a wider bucket says nothing.
	maxBucketSeconds = 366 * 24 * 60 * 60
)

func toJobStats(st stats.Stats) *model.JobStats {
	out := &model.JobStats{
		Jobs:          int(st.Jobs),
		JobsCompleted: int(st.JobsCompleted),
		JobsFailed:    int(st.JobsFailed),
		JobsCancelled: int(st.JobsCancelled),
		Run:           toDurationStats(st.Run),
		Steps:         make([]*model.StepStats, len(st.Steps)),
		Subjobs:       toDurationStats(st.SubJobs),
		Throughput:    make([]*model.ThroughputBucket, len(st.Throughput)),
		Total:         int(st.Total),
		Succeeded:     int(st.Succeeded),
		Failed:        int(st.Failed),
		Attempts:      int(st.Attempts),
		Retries:       int(st.Retries),
		TimedOut:      int(st.TimedOut),
		Duplicates:    int(st.Duplicates),
		Late:          int(st.Late),
		TopErrors:     make([]*model.ErrorCount, len(st.TopErrors)),
	}
	for i, d := range st.Steps {
		out.Steps[i] = &model.StepStats{Number: i + 1, Duration: toDurationStats(d)}
	}
	for i, b := range st.Throughput {
		out.Throughput[i] = &model.ThroughputBucket{Start: b.Start.UTC(), Completed: int(b.Completed)}
	}
	if len(st.Throughput) > 0 && st.BucketWidth > 0 {
		secs := int(st.BucketWidth / time.Second)
		out.ThroughputBucketSeconds = &secs
	}
	for i, e := range st.TopErrors {
		out.TopErrors[i] = &model.ErrorCount{Error: e.Error, Count: int(e.Count)}
	}
	return out
}

func toDurationStats(d stats.Durations) *model.DurationStats {
	out := &model.DurationStats{Count: int(d.Count)}
	if d.Count == 0 {
		return out
	}
	out.MeanSeconds, out.P50Seconds, out.P95Seconds, out.P99Seconds = seconds(d.Mean), seconds(d.P50), seconds(d.P95), seconds(d.P99)
	return out
}

func seconds(d time.Duration) *float64 {
	s := d.Seconds()
	return &s
}

// timelineKinds maps the status view's event kinds to the schema's.
var timelineKinds = map[string]model.TimelineEventKind{
	timeline.KindJobStarted:           model.TimelineEventKindJobStarted,
	timeline.KindStep1Completed:       model.TimelineEventKindStep1Completed,
	timeline.KindStep2Started:         model.TimelineEventKindStep2Started,
	timeline.KindStep2SubjobCompleted: model.TimelineEventKindSubjobCompleted,
	timeline.KindStep2SubjobFailed:    model.TimelineEventKindSubjobFailed,
	timeline.KindStep2Completed:       model.TimelineEventKindStep2Completed,
	timeline.KindStep3Completed:       model.TimelineEventKindStep3Completed,
	timeline.KindStepFailed:           model.TimelineEventKindStepFailed,
	timeline.KindAttemptTimedOut:      model.TimelineEventKindAttemptTimedOut,
	timeline.KindJobCompleted:         model.TimelineEventKindJobCompleted,
	timeline.KindJobFailed:            model.TimelineEventKindJobFailed,
	timeline.KindJobCancelled:         model.TimelineEventKindJobCancelled,
}

func toTimelineEntry(e timeline.Entry) (*model.TimelineEntry, error) {
	kind, ok := timelineKinds[e.Kind]
	if !ok {
		return nil, fmt.Errorf("timeline entry %d has kind %q, which the schema does not name", e.Pos, e.Kind)
	}
	out := &model.TimelineEntry{
		Position: int(e.Pos),
		EventID:  e.EventID,
		Kind:     kind,
		At:       e.At.UTC(),
		Detail:   stringOrNil(e.Detail),
	}
	if e.Seq > 0 {
		out.Seq = intOrNil(e.Seq)
	}
	if e.Step > 0 {
		out.Step = intOrNil(int64(e.Step))
	}
	if e.Index != timeline.NoSubJob {
		out.SubjobIndex = intOrNil(e.Index)
	}
	if e.Attempt > 0 {
		out.Attempt = intOrNil(int64(e.Attempt))
	}
	if kind == model.TimelineEventKindSubjobCompleted || kind == model.TimelineEventKindSubjobFailed {
		out.DurationSeconds = seconds(e.Duration)
	}
	return out, nil
}

// toSubjobState is the schema's name of a sub-job state of the status view.
func toSubjobState(s job.SubJobState) (model.SubjobState, error) {
	out := model.SubjobState(s)
	if !out.IsValid() {
		return "", fmt.Errorf("sub-job state %q, which the schema does not name", s)
	}
	return out, nil
}

func toSubjobActivity(s timeline.SubJob) (*model.SubjobActivity, error) {
	state, err := toSubjobState(s.State)
	if err != nil {
		return nil, fmt.Errorf("sub-job %d: %w", s.Index, err)
	}
	out := &model.SubjobActivity{
		Index:          int(s.Index),
		State:          state,
		Attempts:       s.Attempts,
		FailedAttempts: s.FailedAttempts,
		TimedOut:       s.TimedOut,
		LastError:      stringOrNil(s.LastError),
		LastErrorAt:    timeOrNil(s.LastErrorAt.UTC()),
		FinishedAt:     timeOrNil(s.FinishedAt.UTC()),
	}
	if s.State == job.SubJobSucceeded {
		out.DurationSeconds = seconds(s.Duration)
	}
	return out, nil
}

// toSubjobActivitySummary lists the states with sub-jobs in the schema's order; a state the schema does
// not name is an error rather than a count left out.
func toSubjobActivitySummary(s timeline.Summary) (*model.SubjobActivitySummary, error) {
	out := &model.SubjobActivitySummary{Events: int(s.Events), SubjobsByState: []*model.SubjobStateCount{}}
	for _, state := range model.AllSubjobState {
		if n := s.SubJobs[job.SubJobState(state)]; n > 0 {
			out.SubjobsByState = append(out.SubjobsByState, &model.SubjobStateCount{State: state, Count: int(n)})
		}
	}
	for state, n := range s.SubJobs {
		if _, err := toSubjobState(state); err != nil && n > 0 {
			return nil, fmt.Errorf("summary of job %s: %w", s.JobID, err)
		}
	}
	return out, nil
}

func intOrNil(n int64) *int {
	i := int(n)
	return &i
}

// webhookTypes maps the schema's event types to the notification types that deliveries carry.
var webhookTypes = map[model.WebhookEventType]notify.Type{
	model.WebhookEventTypeJobStarted:   notify.TypeJobStarted,
	model.WebhookEventTypeStepStarted:  notify.TypeStepStarted,
	model.WebhookEventTypeStepFinished: notify.TypeStepFinished,
	model.WebhookEventTypeJobCompleted: notify.TypeJobCompleted,
	model.WebhookEventTypeJobFailed:    notify.TypeJobFailed,
	model.WebhookEventTypeJobCancelled: notify.TypeJobCancelled,
}

// toWebhookEventType is the schema's name of a notification type.
func toWebhookEventType(t notify.Type) (model.WebhookEventType, error) {
	for k, v := range webhookTypes {
		if v == t {
			return k, nil
		}
	}
	return "", fmt.Errorf("notification type %q has no WebhookEventType", t)
}

func toWebhook(w notify.Webhook) (*model.Webhook, error) {
	out := &model.Webhook{ID: w.ID, URL: w.URL, EventTypes: make([]model.WebhookEventType, len(w.EventTypes)), CreatedAt: w.CreatedAt.UTC()}
	for i, t := range w.EventTypes {
		et, err := toWebhookEventType(t)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: %w", w.ID, err)
		}
		out.EventTypes[i] = et
	}
	return out, nil
}

func toWebhookDelivery(d notify.Delivery) (*model.WebhookDelivery, error) {
	et, err := toWebhookEventType(d.Type)
	if err != nil {
		return nil, fmt.Errorf("delivery %s: %w", d.ID, err)
	}
	data := model.JSON(d.Data)
	if len(data) == 0 {
		data = model.JSON(`{}`)
	}
	out := &model.WebhookDelivery{
		ID:            d.ID,
		WebhookID:     d.WebhookID,
		EventType:     et,
		JobID:         d.JobID,
		At:            d.At.UTC(),
		Data:          data,
		State:         model.WebhookDeliveryState(d.State),
		Attempts:      d.Attempts,
		LastError:     stringOrNil(d.LastError),
		NextAttemptAt: timeOrNil(d.NextAttemptAt),
		DeliveredAt:   timeOrNil(d.DeliveredAt),
		CreatedAt:     d.CreatedAt.UTC(),
		UpdatedAt:     d.UpdatedAt.UTC(),
	}
	if d.Step > 0 {
		out.Step = intOrNil(int64(d.Step))
	}
	if d.LastStatusCode != 0 {
		out.LastStatusCode = intOrNil(int64(d.LastStatusCode))
	}
	if !out.State.IsValid() {
		return nil, fmt.Errorf("delivery %s has state %q, which the schema does not name", d.ID, d.State)
	}
	return out, nil
}

// invalidMessage is the reason a webhook was refused, for the client: notify's explanation without its
// "invalid webhook: " prefix.
func invalidMessage(err error) string {
	return strings.TrimPrefix(err.Error(), notify.ErrInvalid.Error()+": ")
}

// timelineCursor names its job, as a sub-job cursor does.
func timelineCursor(jobID string, pos int64) string {
	return encodeCursor("tl:" + strconv.FormatInt(pos, 10) + ":" + jobID)
}

// timelineAfter decodes a timeline cursor of job jobID into the position to continue after (0 for the
// first page).
func timelineAfter(jobID string, after *string) (int64, error) {
	if after == nil {
		return 0, nil
	}
	s, ok := decodeCursor(*after)
	rest, found := strings.CutPrefix(s, "tl:")
	if !ok || !found {
		return 0, errInvalidCursor()
	}
	pos, id, found := strings.Cut(rest, ":")
	if !found || id != jobID {
		return 0, errInvalidCursor()
	}
	n, err := strconv.ParseInt(pos, 10, 64)
	if err != nil || n < 1 {
		return 0, errInvalidCursor()
	}
	return n, nil
}
