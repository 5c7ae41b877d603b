package stats

import (
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jobmill/jobmill/app/job"
)

// The folding rules: how one event changes the stored records. They do no I/O; the Projection loads
// what an event touches, applies these, and stores what changed.

// micro truncates t to the store's precision, so that what is compared in memory is what was stored.
func micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMicro(t.UnixMicro()).UTC()
}

// microDuration truncates d to microseconds; a negative duration (a clock gone backwards) counts as zero.
func microDuration(d time.Duration) time.Duration {
	return max(d.Truncate(time.Microsecond), 0)
}

// earliest is the earlier of cur and t, where a zero time is unset.
func earliest(cur, t time.Time) time.Time {
	t = micro(t)
	if cur.IsZero() || (!t.IsZero() && t.Before(cur)) {
		return t
	}
	return cur
}

func (r *Record) applyJobStarted(e job.JobStarted) {
	r.Tenant, r.Type = e.Tenant, e.Type
	r.CreatedAt = micro(e.At)
}

func (r *Record) applyStep1Completed(e job.Step1Completed) {
	r.Step1Done = earliest(r.Step1Done, e.At)
	r.Step1Attempts = max(r.Step1Attempts, int64(e.Attempt))
}

func (r *Record) applyStep2Started(e job.Step2Started) {
	r.Step2Start = micro(e.At)
	r.Total = e.Total
}

func (r *Record) applyStep2Completed(e job.Step2Completed) {
	r.Step2Done = micro(e.At)
	r.Step2Closed = true
	r.Step2Succeeded, r.Step2Failed = e.Succeeded, e.Failed
}

func (r *Record) applyStep3Completed(e job.Step3Completed) {
	r.Step3Done = earliest(r.Step3Done, e.At)
	r.Step3Attempts = max(r.Step3Attempts, int64(e.Attempt))
}

// applyEnd applies the job's terminal event. It returns false when the job had ended already: a job
// ends once, and its end is applied once.
func (r *Record) applyEnd(outcome Outcome, at time.Time, counts job.Counts) bool {
	if r.Ended() {
		return false
	}
	r.Outcome = outcome
	r.EndedAt = micro(at)
	r.Final = counts
	return true
}

// noteStepAttempt records that attempt of step 1 or 3 ran.
func (r *Record) noteStepAttempt(step int, attempt int64) {
	switch step {
	case 1:
		r.Step1Attempts = max(r.Step1Attempts, attempt)
	case 3:
		r.Step3Attempts = max(r.Step3Attempts, attempt)
	}
}

// noteSubJobAttempt records that attempt of sub-job s ran (found: s was stored before). It returns
// whether s changed.
func (r *Record) noteSubJobAttempt(s *SubJobRecord, found bool, attempt int64) bool {
	if !found {
		r.SubJobs++
	}
	if attempt <= s.MaxAttempt {
		return !found
	}
	r.SubJobAttempts += attempt - s.MaxAttempt
	s.MaxAttempt = attempt
	return true
}

// completion is a sub-job success as it counts: when, how long, which attempt.
type completion struct {
	At       time.Time
	Duration time.Duration
	Attempt  int64
}

// before orders the success reports of one sub-job; the first counts. Any report can be compared with
// any other, so the one that counts does not depend on the order in which they arrive.
func (c completion) before(o completion) bool {
	switch {
	case !c.At.Equal(o.At):
		return c.At.Before(o.At)
	case c.Duration != o.Duration:
		return c.Duration < o.Duration
	default:
		return c.Attempt < o.Attempt
	}
}

// successChange is what one success report changes beyond the records: the completion it adds to the
// job's sketch and throughput, and the one it replaces (nil: none).
type successChange struct {
	added, removed *completion
	// subJobChanged says whether the sub-job's record must be stored.
	subJobChanged bool
}

// foldSuccess applies a success report of sub-job s (found: s was stored before).
func foldSuccess(r *Record, s *SubJobRecord, found bool, e job.Step2SubjobCompleted) successChange {
	c := completion{At: micro(e.At), Duration: microDuration(e.Duration), Attempt: int64(e.Attempt)}
	ch := successChange{subJobChanged: r.noteSubJobAttempt(s, found, c.Attempt)}
	if s.SuccessAttempt == 0 {
		r.Succeeded++
	} else {
		r.Duplicates++
		counted := completion{At: s.SuccessAt, Duration: s.SuccessDuration, Attempt: s.SuccessAttempt}
		if !c.before(counted) {
			return ch
		}
		ch.removed = &counted
		r.DurationSum -= counted.Duration
	}
	ch.added = &c
	ch.subJobChanged = true
	s.SuccessAttempt, s.SuccessAt, s.SuccessDuration = c.Attempt, c.At, c.Duration
	r.DurationSum += c.Duration
	return ch
}

// apply moves the change into the job's sketch and returns the throughput deltas, per one-second bucket.
func (ch successChange) apply(sk *Sketch) map[time.Time]int64 {
	deltas := map[time.Time]int64{}
	if ch.removed != nil {
		sk.Remove(ch.removed.Duration)
		deltas[secondOf(ch.removed.At)]--
	}
	if ch.added != nil {
		sk.Add(ch.added.Duration)
		deltas[secondOf(ch.added.At)]++
	}
	for b, d := range deltas {
		if d == 0 {
			delete(deltas, b)
		}
	}
	return deltas
}

// secondOf is the one-second throughput bucket t falls in.
func secondOf(t time.Time) time.Time {
	return time.Unix(t.Unix(), 0).UTC()
}

// errorChange is what a failure report changes in the job's error counts.
type errorChange struct {
	// added is the text counted (empty: none); removed the text it replaces (empty: none).
	added, removed string
	// attemptChanged says whether the attempt's record must be stored.
	attemptChanged bool
}

// foldFailure applies a failure report with the normalised text to the attempt's record a. One attempt
// counts once, under the least of the texts reported for it.
func foldFailure(r *Record, a *AttemptRecord, text string) errorChange {
	switch {
	case a.Error == "":
		a.Error = text
		return errorChange{added: text, attemptChanged: true}
	case text < a.Error:
		r.Duplicates++
		old := a.Error
		a.Error = text
		return errorChange{added: text, removed: old, attemptChanged: true}
	default:
		r.Duplicates++
		return errorChange{}
	}
}

// foldTimeout applies a time-out of the attempt a; it returns whether a changed.
func foldTimeout(r *Record, a *AttemptRecord) bool {
	if a.TimedOut {
		return false
	}
	a.TimedOut = true
	r.TimedOut++
	return true
}

// normalizeError is the text a failure is counted under: control characters and runs of white space
// become one space, the ends are trimmed, invalid UTF-8 is replaced, and the text is cut to
// MaxErrorLength characters. Failures without text count as "(no message)".
func normalizeError(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) > MaxErrorLength {
		runes := []rune(s)
		s = strings.TrimSpace(string(runes[:MaxErrorLength]))
	}
	if s == "" {
		return "(no message)"
	}
	return s
}

// compactErrors keeps the keep most frequent texts (ties: byte order of the text) and counts the rest
// under OtherErrors; texts whose count fell to zero go. It returns false when nothing changes.
func compactErrors(errs []ErrorCount, keep int) ([]ErrorCount, bool) {
	live := make([]ErrorCount, 0, len(errs))
	for _, e := range errs {
		if e.Count > 0 {
			live = append(live, e)
		}
	}
	if len(live) == len(errs) && len(live) <= keep {
		return errs, false
	}
	sortErrors(live)
	if len(live) <= keep {
		return live, true
	}
	var other int64
	for _, e := range live[keep:] {
		other += e.Count
	}
	kept := live[:keep]
	for i := range kept {
		if kept[i].Error == OtherErrors {
			kept[i].Count += other
			sortErrors(kept)
			return kept, true
		}
	}
	kept = append(kept, ErrorCount{Error: OtherErrors, Count: other})
	sortErrors(kept)
	return kept, true
}

// sortErrors orders by count, most first, then by text.
func sortErrors(errs []ErrorCount) {
	slices.SortFunc(errs, func(a, b ErrorCount) int {
		switch {
		case a.Count != b.Count:
			if a.Count > b.Count {
				return -1
			}
			return 1
		default:
			return strings.Compare(a.Error, b.Error)
		}
	})
}

// counters are a record's counters as reported: the manager's final ones once the job ended, what the
// projection saw before.
type counters struct {
	Total, Succeeded, Failed, Attempts, Retries, TimedOut, Duplicates, Late int64
}

func (r Record) counters() counters {
	c := counters{
		Total:     r.Total,
		Succeeded: r.Succeeded,
		Attempts:  r.SubJobAttempts + r.Step1Attempts + r.Step3Attempts,
		Retries: r.SubJobAttempts - r.SubJobs + max(r.Step1Attempts-1, 0) +
			max(r.Step3Attempts-1, 0),
		TimedOut:   r.TimedOut,
		Duplicates: r.Duplicates,
	}
	if r.Step2Closed {
		c.Succeeded, c.Failed = r.Step2Succeeded, r.Step2Failed
	}
	if r.Ended() {
		f := r.Final
		if f.Total > 0 || c.Total == 0 {
			c.Total = f.Total
		}
		c.Succeeded, c.Failed, c.Retries = f.Succeeded, f.Failed, f.Retries
		c.TimedOut, c.Duplicates, c.Late = f.TimedOut, f.Duplicates, f.Late
	}
	return c
}

// stepDurations returns the durations of the steps the job went through (ok false for the others), and
// of its whole run once it ended.
func (r Record) stepDurations() (steps [3]time.Duration, ok [3]bool, run time.Duration, ended bool) {
	span := func(from, to time.Time) (time.Duration, bool) {
		if from.IsZero() || to.IsZero() {
			return 0, false
		}
		return max(to.Sub(from), 0), true
	}
	steps[0], ok[0] = span(r.CreatedAt, r.Step1Done)
	steps[1], ok[1] = span(r.Step2Start, r.Step2Done)
	step3End := r.Step3Done
	if r.Outcome == OutcomeCompleted {
		step3End = r.EndedAt
	}
	steps[2], ok[2] = span(r.Step2Done, step3End)
	run, ended = span(r.CreatedAt, r.EndedAt)
	return steps, ok, run, ended
}
