package graph

import (
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/live"
	"github.com/jobmill/jobmill/graph/model"
)

// The schema's enums spell the core's states and kinds the same way, so conversions are plain casts.

func toJob(j *job.Job) *model.Job {
	if j == nil {
		return nil
	}
	steps := make([]*model.Step, len(j.Steps))
	for i, st := range j.Steps {
		steps[i] = toStep(i+1, st, j)
	}
	return &model.Job{
		ID:       j.ID,
		Type:     j.Type,
		State:    model.JobState(j.State),
		Progress: j.Progress(),
		Seq:      int(j.Version()),
		Counts: &model.SubjobCounts{
			Total:      int(j.Total),
			Succeeded:  int(j.Succeeded),
			Failed:     int(j.Failed),
			InFlight:   int(j.InFlight),
			Retries:    int(j.Retries),
			TimedOut:   int(j.TimedOut),
			Duplicates: int(j.Duplicates),
			Late:       int(j.Late),
		},
		Steps:     steps,
		Input:     jsonOrNil(j.Input),
		Output:    jsonOrNil(j.Output),
		Error:     stringOrNil(j.Error),
		Deadline:  timeOrNil(j.Deadline),
		CreatedAt: j.CreatedAt,
		UpdatedAt: j.UpdatedAt,
		EndedAt:   timeOrNil(j.EndedAt),
	}
}

// toStep reports a step. A step that was still running when the job failed or was cancelled finished
// with the job.
func toStep(n int, st job.StepTimes, j *job.Job) *model.Step {
	s := &model.Step{Number: n, State: model.StepStateNotStarted, StartedAt: timeOrNil(st.StartedAt), FinishedAt: timeOrNil(st.FinishedAt)}
	switch {
	case st.StartedAt.IsZero():
	case !st.FinishedAt.IsZero():
		s.State = model.StepStateFinished
	case j.State.Terminal():
		s.State = model.StepStateFinished
		s.FinishedAt = timeOrNil(j.EndedAt)
	default:
		s.State = model.StepStateRunning
	}
	return s
}

func toSubjob(s *job.SubJob) *model.Subjob {
	return &model.Subjob{
		Index:      int(s.Index),
		State:      model.SubjobState(s.State),
		Attempts:   s.Attempt,
		LastError:  stringOrNil(s.LastError),
		StartedAt:  timeOrNil(s.StartedAt),
		FinishedAt: timeOrNil(s.FinishedAt),
	}
}

func toJobEvent(u live.Update) *model.JobEvent {
	e := &model.JobEvent{Seq: int(u.Seq), Kind: model.JobEventKind(u.Kind), Job: toJob(u.Job)}
	if u.Step > 0 {
		step := u.Step
		e.Step = &step
	}
	return e
}

func toJobType(d jobtype.Definition) *model.JobType {
	return &model.JobType{
		Name:                 d.Name,
		MaxAttempts:          d.Policy.MaxAttempts,
		SubjobTimeoutSeconds: d.Policy.SubJobTimeout.Seconds(),
		StepTimeoutSeconds:   d.Policy.StepTimeout.Seconds(),
	}
}

func toStates(in []model.JobState) []job.State {
	if len(in) == 0 {
		return nil
	}
	out := make([]job.State, len(in))
	for i, s := range in {
		out[i] = job.State(s)
	}
	return out
}

func jsonOrNil(b []byte) model.JSON {
	if len(b) == 0 {
		return nil
	}
	return model.JSON(b)
}

func stringOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
