package stats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/projection"
)

// Name is the projection's consumer group on the event log.
const Name = "stats"

// Projection folds the event log into statistics and reads them back.
type Projection struct {
	store Store
}

var (
	_ projection.Projection     = (*Projection)(nil)
	_ projection.ReportsApplier = (*Projection)(nil)
)

// New refuses a nil store.
func New(store Store) (*Projection, error) {
	if store == nil {
		return nil, errors.New("stats: store is required")
	}
	return &Projection{store: store}, nil
}

// Name implements projection.Projection.
func (p *Projection) Name() string { return Name }

// Reset implements projection.Projection: it deletes all statistics.
func (p *Projection) Reset(ctx context.Context) error {
	if err := p.store.Reset(ctx); err != nil {
		return fmt.Errorf("reset statistics: %w", err)
	}
	return nil
}

// Apply implements projection.Projection. Events that carry no statistics (Tick, commands) are ignored.
// A report without an event id is still applied once per sub-job and attempt, but a redelivery of it
// would count as a duplicate while the job runs.
func (p *Projection) Apply(ctx context.Context, eventID string, m job.Message) error {
	var err error
	if item, ok := reportOf(eventID, m); ok {
		err = p.report(ctx, m.JobKey(), []reportItem{item})
	} else {
		switch e := m.(type) {
		case job.JobStarted:
			err = p.update(ctx, e.JobID, func(r *Record) { r.applyJobStarted(e) })
		case job.Step1Completed:
			err = p.update(ctx, e.JobID, func(r *Record) { r.applyStep1Completed(e) })
		case job.Step2Started:
			err = p.update(ctx, e.JobID, func(r *Record) { r.applyStep2Started(e) })
		case job.Step2Completed:
			err = p.update(ctx, e.JobID, func(r *Record) { r.applyStep2Completed(e) })
		case job.Step3Completed:
			err = p.update(ctx, e.JobID, func(r *Record) { r.applyStep3Completed(e) })
		case job.JobCompleted:
			err = p.end(ctx, e.JobID, OutcomeCompleted, e.At, e.Counts)
		case job.JobFailed:
			err = p.end(ctx, e.JobID, OutcomeFailed, e.At, e.Counts)
		case job.JobCancelled:
			err = p.end(ctx, e.JobID, OutcomeCancelled, e.At, e.Counts)
		default:
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("statistics of job %s: %w", m.JobKey(), err)
	}
	return nil
}

// ApplyReports implements projection.ReportsApplier: the reports of one message in one transaction, the
// job's record and duration sketch read and written once.
func (p *Projection) ApplyReports(ctx context.Context, ids []string, reports []job.Message) error {
	if len(ids) != len(reports) {
		return fmt.Errorf("stats: %d ids for %d reports", len(ids), len(reports))
	}
	items := make([]reportItem, 0, len(reports))
	jobID := ""
	for i, m := range reports {
		if item, ok := reportOf(ids[i], m); ok {
			if jobID != "" && m.JobKey() != jobID {
				return fmt.Errorf("stats: reports of jobs %s and %s applied together", jobID, m.JobKey())
			}
			jobID = m.JobKey()
			items = append(items, item)
		}
	}
	if len(items) == 0 {
		return nil
	}
	if err := p.report(ctx, jobID, items); err != nil {
		return fmt.Errorf("statistics of job %s: %w", jobID, err)
	}
	return nil
}

// reportItem is one report or time-out to fold in, with the id it is recorded under ("" records none).
type reportItem struct {
	eventID string
	fold    func(ctx context.Context, tx Tx, f *reportFold) error
}

// reportOf returns the fold of a worker's report, a step failure or a time-out; false for other events.
func reportOf(eventID string, m job.Message) (reportItem, bool) {
	switch e := m.(type) {
	case job.Step2SubjobCompleted:
		return reportItem{eventID, func(ctx context.Context, tx Tx, f *reportFold) error {
			return applySuccess(ctx, tx, f, e)
		}}, true
	case job.Step2SubjobFailed:
		return reportItem{eventID, func(ctx context.Context, tx Tx, f *reportFold) error {
			return applyFailure(ctx, tx, f.record, AttemptKey{JobID: e.JobID, Step: 2, Index: e.Index, Attempt: int64(e.Attempt)}, e.Error)
		}}, true
	case job.StepFailed:
		if e.Step != 1 && e.Step != 3 {
			return reportItem{}, false
		}
		return reportItem{eventID, func(ctx context.Context, tx Tx, f *reportFold) error {
			return applyFailure(ctx, tx, f.record, AttemptKey{JobID: e.JobID, Step: e.Step, Attempt: int64(e.Attempt)}, e.Error)
		}}, true
	case job.AttemptTimedOut:
		if e.Step < 1 || e.Step > 3 {
			return reportItem{}, false
		}
		// The manager emits one time-out per attempt: the attempt is its own key, no event id needed.
		return reportItem{"", func(ctx context.Context, tx Tx, f *reportFold) error {
			return applyTimeout(ctx, tx, f.record, e)
		}}, true
	}
	return reportItem{}, false
}

// update applies a rule that changes only the job's record. Those rules set a value once or keep a
// minimum or maximum, so they apply as well after the job ended, and any number of times.
func (p *Projection) update(ctx context.Context, jobID string, fold func(r *Record)) error {
	return p.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		r, err := tx.LockJob(ctx, jobID)
		if err != nil {
			return err
		}
		fold(&r)
		return tx.SaveJob(ctx, r)
	})
}

// report applies workers' reports and time-outs of one job: each once per event id, and only while the job
// runs (its bookkeeping is gone once it ended).
func (p *Projection) report(ctx context.Context, jobID string, items []reportItem) error {
	return p.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		r, err := tx.LockJob(ctx, jobID)
		if err != nil || r.Ended() {
			return err
		}
		f := &reportFold{record: &r}
		for _, item := range items {
			if item.eventID != "" {
				fresh, err := tx.MarkEvent(ctx, jobID, item.eventID)
				if err != nil {
					return err
				}
				if !fresh {
					continue
				}
			}
			if err := item.fold(ctx, tx, f); err != nil {
				return err
			}
		}
		if err := f.flush(ctx, tx, jobID); err != nil {
			return err
		}
		return tx.SaveJob(ctx, r)
	})
}

// reportFold is what the reports of one transaction change beyond their own rows: the job's record, its
// duration sketch (decoded once, encoded once) and its throughput (written once per one-second bucket).
type reportFold struct {
	record      *Record
	sketch      *Sketch
	completions map[time.Time]int64
}

// durations returns the job's duration sketch, decoding it on first use.
func (f *reportFold) durations() (*Sketch, error) {
	if f.sketch == nil {
		sk, err := DecodeSketch(f.record.Durations)
		if err != nil {
			return nil, err
		}
		f.sketch, f.completions = sk, map[time.Time]int64{}
	}
	return f.sketch, nil
}

// flush writes the throughput changes and puts the sketch back into the record.
func (f *reportFold) flush(ctx context.Context, tx Tx, jobID string) error {
	if f.sketch == nil {
		return nil
	}
	buckets := make([]time.Time, 0, len(f.completions))
	for b, d := range f.completions {
		if d != 0 {
			buckets = append(buckets, b)
		}
	}
	slices.SortFunc(buckets, time.Time.Compare)
	for _, b := range buckets {
		if err := tx.AddCompletions(ctx, jobID, b, f.completions[b]); err != nil {
			return err
		}
	}
	f.record.Durations = f.sketch.Encode()
	return nil
}

func applySuccess(ctx context.Context, tx Tx, f *reportFold, e job.Step2SubjobCompleted) error {
	s, found, err := tx.SubJob(ctx, e.JobID, e.Index)
	if err != nil {
		return err
	}
	if !found {
		s = SubJobRecord{JobID: e.JobID, Index: e.Index}
	}
	ch := foldSuccess(f.record, &s, found, e)
	if ch.subJobChanged {
		if err := tx.SaveSubJob(ctx, s); err != nil {
			return err
		}
	}
	if ch.added == nil && ch.removed == nil {
		return nil
	}
	sk, err := f.durations()
	if err != nil {
		return err
	}
	for bucket, delta := range ch.apply(sk) {
		f.completions[bucket] += delta
	}
	return nil
}

func applyFailure(ctx context.Context, tx Tx, r *Record, key AttemptKey, text string) error {
	if err := noteAttempt(ctx, tx, r, key); err != nil {
		return err
	}
	a, found, err := tx.Attempt(ctx, key)
	if err != nil {
		return err
	}
	if !found {
		a = AttemptRecord{AttemptKey: key}
	}
	ch := foldFailure(r, &a, normalizeError(text))
	if ch.attemptChanged {
		if err := tx.SaveAttempt(ctx, a); err != nil {
			return err
		}
	}
	if ch.removed != "" {
		if err := tx.AddError(ctx, key.JobID, ch.removed, -1); err != nil {
			return err
		}
	}
	if ch.added != "" {
		return tx.AddError(ctx, key.JobID, ch.added, 1)
	}
	return nil
}

func applyTimeout(ctx context.Context, tx Tx, r *Record, e job.AttemptTimedOut) error {
	key := AttemptKey{JobID: e.JobID, Step: e.Step, Attempt: int64(e.Attempt)}
	if e.Step == 2 {
		key.Index = e.Index
	}
	if err := noteAttempt(ctx, tx, r, key); err != nil {
		return err
	}
	a, found, err := tx.Attempt(ctx, key)
	if err != nil {
		return err
	}
	if !found {
		a = AttemptRecord{AttemptKey: key}
	}
	if foldTimeout(r, &a) {
		return tx.SaveAttempt(ctx, a)
	}
	return nil
}

// noteAttempt counts the attempt key names: in the job's record for steps 1 and 3, in the sub-job's for
// step 2.
func noteAttempt(ctx context.Context, tx Tx, r *Record, key AttemptKey) error {
	if key.Step != 2 {
		r.noteStepAttempt(key.Step, key.Attempt)
		return nil
	}
	s, found, err := tx.SubJob(ctx, key.JobID, key.Index)
	if err != nil {
		return err
	}
	if !found {
		s = SubJobRecord{JobID: key.JobID, Index: key.Index}
	}
	if r.noteSubJobAttempt(&s, found, key.Attempt) {
		return tx.SaveSubJob(ctx, s)
	}
	return nil
}

// end applies the job's terminal event and closes the job: its bookkeeping goes, and only its most
// frequent error texts stay.
func (p *Projection) end(ctx context.Context, jobID string, outcome Outcome, at time.Time, counts job.Counts) error {
	return p.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		r, err := tx.LockJob(ctx, jobID)
		if err != nil {
			return err
		}
		if !r.applyEnd(outcome, at, counts) {
			return nil
		}
		if err := tx.DropBookkeeping(ctx, jobID); err != nil {
			return err
		}
		errs, err := tx.JobErrors(ctx, jobID)
		if err != nil {
			return err
		}
		if kept, changed := compactErrors(errs, KeptErrors); changed {
			if err := tx.ReplaceErrors(ctx, jobID, kept); err != nil {
				return err
			}
		}
		return tx.SaveJob(ctx, r)
	})
}

// JobStats returns the statistics of one job. With a tenant set, another tenant's job is not found; a
// job whose JobStarted has not been applied yet is not found either.
func (p *Projection) JobStats(ctx context.Context, jobID, tenant string) (Stats, error) {
	var (
		rec   Record
		found bool
	)
	err := p.store.Jobs(ctx, Query{JobID: jobID}, func(r Record) error {
		rec, found = r, true
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("statistics of job %s: %w", jobID, err)
	}
	if !found || !rec.Started() || (tenant != "" && rec.Tenant != tenant) {
		return Stats{}, fmt.Errorf("statistics of job %s: %w", jobID, job.ErrNotFound)
	}
	var acc accumulator
	if err := acc.add(rec); err != nil {
		return Stats{}, fmt.Errorf("statistics of job %s: %w", jobID, err)
	}
	st, err := p.finish(ctx, &acc, Query{JobID: jobID}, 0, DefaultTopErrors)
	if err != nil {
		return Stats{}, fmt.Errorf("statistics of job %s: %w", jobID, err)
	}
	return st, nil
}

// Aggregate returns the statistics of the jobs f selects, summed and merged.
func (p *Projection) Aggregate(ctx context.Context, f Filter) (Stats, error) {
	q := Query{Tenant: f.Tenant, Type: f.Type, CreatedAfter: f.CreatedAfter, CreatedBefore: f.CreatedBefore}
	var acc accumulator
	if err := p.store.Jobs(ctx, q, acc.add); err != nil {
		return Stats{}, fmt.Errorf("aggregate statistics: %w", err)
	}
	top := f.TopErrors
	if top <= 0 {
		top = DefaultTopErrors
	}
	st, err := p.finish(ctx, &acc, q, f.Bucket, top)
	if err != nil {
		return Stats{}, fmt.Errorf("aggregate statistics: %w", err)
	}
	return st, nil
}

// finish reads the throughput series and the top errors of the jobs q selects into the accumulated
// statistics.
func (p *Projection) finish(ctx context.Context, acc *accumulator, q Query, minWidth time.Duration, top int) (Stats, error) {
	st := acc.stats()
	if st.Jobs == 0 {
		return st, nil
	}
	first, last, err := p.store.CompletionSpan(ctx, q)
	if err != nil {
		return Stats{}, err
	}
	if !first.IsZero() {
		width := bucketWidth(first, last, minWidth)
		buckets, err := p.store.Completions(ctx, q, width)
		if err != nil {
			return Stats{}, err
		}
		st.BucketWidth = width
		st.Throughput = fillBuckets(buckets, width)
	}
	if st.TopErrors, err = p.store.TopErrors(ctx, q, top); err != nil {
		return Stats{}, err
	}
	return st, nil
}
