package timeline

import (
	"fmt"
	"unicode/utf8"

	"github.com/jobmill/jobmill/app/job"
)

// entryOf turns a log event into its timeline entry (without Pos and EventID). Ticks and messages that
// are not log events have none.
func entryOf(m job.Message) (Entry, bool) {
	e := Entry{Index: NoSubJob}
	switch ev := deref(m).(type) {
	case job.JobStarted:
		e.Kind, e.Seq, e.At = KindJobStarted, ev.Seq, ev.At
	case job.Step1Completed:
		e.Kind, e.At, e.Step, e.Attempt = KindStep1Completed, ev.At, 1, ev.Attempt
	case job.Step2Started:
		e.Kind, e.Seq, e.At, e.Step = KindStep2Started, ev.Seq, ev.At, 2
	case job.Step2SubjobCompleted:
		e.Kind, e.At, e.Step, e.Index, e.Attempt, e.Duration = KindStep2SubjobCompleted, ev.At, 2, ev.Index, ev.Attempt, ev.Duration
	case job.Step2SubjobFailed:
		e.Kind, e.At, e.Step, e.Index, e.Attempt, e.Duration = KindStep2SubjobFailed, ev.At, 2, ev.Index, ev.Attempt, ev.Duration
		e.Detail = truncate(ev.Error)
	case job.Step2Completed:
		e.Kind, e.Seq, e.At, e.Step = KindStep2Completed, ev.Seq, ev.At, 2
	case job.Step3Completed:
		e.Kind, e.At, e.Step, e.Attempt = KindStep3Completed, ev.At, 3, ev.Attempt
	case job.StepFailed:
		e.Kind, e.At, e.Step, e.Attempt, e.Detail = KindStepFailed, ev.At, ev.Step, ev.Attempt, truncate(ev.Error)
	case job.JobCompleted:
		e.Kind, e.Seq, e.At = KindJobCompleted, ev.Seq, ev.At
	case job.JobFailed:
		e.Kind, e.Seq, e.At, e.Detail = KindJobFailed, ev.Seq, ev.At, truncate(ev.Reason)
	case job.JobCancelled:
		e.Kind, e.Seq, e.At, e.Detail = KindJobCancelled, ev.Seq, ev.At, truncate(ev.Reason)
	case job.AttemptTimedOut:
		e.Kind, e.Seq, e.At, e.Step, e.Attempt = KindAttemptTimedOut, ev.Seq, ev.At, ev.Step, ev.Attempt
		if ev.Step == 2 {
			e.Index = ev.Index // the event carries 0 for steps 1 and 3
		}
		e.Detail = fmt.Sprintf("attempt %d timed out", ev.Attempt)
	default:
		return Entry{}, false
	}
	return e, true
}

// deref accepts events by pointer too, as CQRS handlers receive them.
func deref(m job.Message) job.Message {
	switch ev := m.(type) {
	case *job.JobStarted:
		return *ev
	case *job.Step1Completed:
		return *ev
	case *job.Step2Started:
		return *ev
	case *job.Step2SubjobCompleted:
		return *ev
	case *job.Step2SubjobFailed:
		return *ev
	case *job.Step2Completed:
		return *ev
	case *job.Step3Completed:
		return *ev
	case *job.StepFailed:
		return *ev
	case *job.JobCompleted:
		return *ev
	case *job.JobFailed:
		return *ev
	case *job.JobCancelled:
		return *ev
	case *job.AttemptTimedOut:
		return *ev
	}
	return m
}

// foldHeader applies one event to a job's header and says whether it changed. Each rule gives the same
// header whatever the order of the job's events: the state is the one of the manager's newest event by
// Seq, and every other field is set by one event only (or only grows).
func foldHeader(h Header, m job.Message) (Header, bool) {
	before := h
	state := func(s job.State, seq int64) {
		h.Seq = max(h.Seq, seq)
		if seq > h.StateSeq {
			h.State, h.StateSeq = s, seq
		}
	}
	ended := func(s job.State, seq int64, e Entry, counts job.Counts) {
		state(s, seq)
		h.EndedAt = e.At
		h.Error = e.Detail
		h.Counts = counts
		// Every sub-job had its outcome when the job ended (step 2 closed, or the failure that ended the
		// job was the last outcome).
		if counts.Total > 0 && counts.Succeeded+counts.Failed == counts.Total {
			h.Step2Closed = true
		}
	}
	e, _ := entryOf(m)
	switch ev := deref(m).(type) {
	case job.JobStarted:
		h.Tenant, h.Type, h.StartedAt = ev.Tenant, ev.Type, ev.At
		// The manager's reaction to JobStarted sends step 1 out unconditionally and emits nothing.
		state(job.StateStep1Running, ev.Seq)
	case job.Step2Started:
		h.Total = ev.Total
		state(job.StateStep2Running, ev.Seq)
	case job.Step2Completed:
		h.Step2Closed = true
		state(job.StateStep3Running, ev.Seq)
	case job.JobCompleted:
		ended(job.StateCompleted, ev.Seq, e, ev.Counts)
		h.Step2Closed = true
	case job.JobFailed:
		ended(job.StateFailed, ev.Seq, e, ev.Counts)
	case job.JobCancelled:
		ended(job.StateCancelled, ev.Seq, e, ev.Counts)
	case job.AttemptTimedOut:
		h.Seq = max(h.Seq, ev.Seq)
	}
	return h, !sameHeader(before, h)
}

func sameHeader(a, b Header) bool {
	return a.JobID == b.JobID && a.Tenant == b.Tenant && a.Type == b.Type && a.State == b.State &&
		a.StateSeq == b.StateSeq && a.Seq == b.Seq && a.Total == b.Total && a.Step2Closed == b.Step2Closed &&
		a.StartedAt.Equal(b.StartedAt) && a.EndedAt.Equal(b.EndedAt) && a.Error == b.Error && a.Counts == b.Counts
}

// foldSubJob derives one sub-job's view from all of its entries, in whatever order they were applied:
//
//   - a success from any attempt makes it SUCCEEDED; when several arrived (a worker ran an attempt
//     twice, or a timed-out attempt finished after its retry started), the lowest attempt's earliest
//     report gives the duration and the finish time;
//   - each attempt that failed or timed out counts once, however many reports it had; the latest
//     attempt's failure gives the last error, a worker's error taking precedence over the time-out of
//     the same attempt (it says more);
//   - without a success, a failed sub-job is FAILED once step 2 closed, RETRY_WAIT until then.
func foldSubJob(index int64, entries []Entry, step2Closed bool) SubJob {
	s := SubJob{Index: index, State: job.SubJobRunning}
	var success *Entry
	failures := map[int]Entry{} // by attempt
	timedOut := map[int]bool{}
	for i := range entries {
		e := &entries[i]
		switch e.Kind {
		case KindStep2SubjobCompleted:
			if success == nil || earlier(*e, *success) {
				success = e
			}
		case KindStep2SubjobFailed, KindAttemptTimedOut:
			if e.Kind == KindAttemptTimedOut {
				timedOut[e.Attempt] = true
			}
			if f, ok := failures[e.Attempt]; !ok || betterFailure(*e, f) {
				failures[e.Attempt] = *e
			}
		default:
			continue
		}
		s.Attempts = max(s.Attempts, e.Attempt)
	}
	s.FailedAttempts, s.TimedOut = len(failures), len(timedOut)
	last := -1
	for attempt, f := range failures {
		if attempt > last {
			last = attempt
			s.LastError, s.LastErrorAt = f.Detail, f.At
		}
	}
	switch {
	case success != nil:
		s.State, s.Duration, s.FinishedAt = job.SubJobSucceeded, success.Duration, success.At
	case len(failures) > 0 && step2Closed:
		s.State, s.FinishedAt = job.SubJobFailed, s.LastErrorAt
	case len(failures) > 0:
		s.State = job.SubJobRetryWait
	}
	return s
}

// earlier orders reports of one sub-job by attempt, then time, then message id: a total order that does
// not depend on when they were applied.
func earlier(a, b Entry) bool {
	if a.Attempt != b.Attempt {
		return a.Attempt < b.Attempt
	}
	if !a.At.Equal(b.At) {
		return a.At.Before(b.At)
	}
	return a.EventID < b.EventID
}

// betterFailure picks the failure that speaks for an attempt: a worker's report over the manager's
// time-out, then the earliest.
func betterFailure(a, b Entry) bool {
	if (a.Kind == KindStep2SubjobFailed) != (b.Kind == KindStep2SubjobFailed) {
		return a.Kind == KindStep2SubjobFailed
	}
	return earlier(a, b)
}

// truncate cuts s to at most MaxDetail bytes without splitting a UTF-8 sequence.
func truncate(s string) string {
	if len(s) <= MaxDetail {
		return s
	}
	cut := MaxDetail
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
