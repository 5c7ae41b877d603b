package timeline

import (
	"context"
	"errors"
	"fmt"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/projection"
)

// ConsumerGroup is the projection's consumer group on the event log.
const ConsumerGroup = "status"

// Projection builds the status view from the event log and answers queries on it.
type Projection struct {
	store Store
}

var (
	_ projection.Projection     = (*Projection)(nil)
	_ projection.ReportsApplier = (*Projection)(nil)
)

// New returns the projection over store.
func New(store Store) (*Projection, error) {
	if store == nil {
		return nil, errors.New("timeline: store is required")
	}
	return &Projection{store: store}, nil
}

// Name implements projection.Projection.
func (p *Projection) Name() string { return ConsumerGroup }

// Reset implements projection.Projection.
func (p *Projection) Reset(ctx context.Context) error {
	if err := p.store.Reset(ctx); err != nil {
		return fmt.Errorf("reset the status timeline: %w", err)
	}
	return nil
}

// Apply implements projection.Projection: one transaction that locks the job's header, appends the
// entry unless its message was applied before, and refreshes the header and the sub-job it concerns.
// Ticks are not recorded.
func (p *Projection) Apply(ctx context.Context, eventID string, m job.Message) error {
	if m == nil {
		return nil
	}
	return p.apply(ctx, []string{eventID}, []job.Message{m})
}

// ApplyReports implements projection.ReportsApplier: the reports of one message in one transaction, the
// job's header locked and saved once.
func (p *Projection) ApplyReports(ctx context.Context, ids []string, reports []job.Message) error {
	if len(ids) != len(reports) {
		return fmt.Errorf("timeline: %d ids for %d reports", len(ids), len(reports))
	}
	return p.apply(ctx, ids, reports)
}

// apply folds in events of one job, in order, in one transaction.
func (p *Projection) apply(ctx context.Context, ids []string, events []job.Message) error {
	type pending struct {
		entry Entry
		event job.Message
	}
	var todo []pending
	jobID := ""
	for i, m := range events {
		e, ok := entryOf(m)
		if !ok || m.JobKey() == "" {
			continue
		}
		if jobID != "" && m.JobKey() != jobID {
			return fmt.Errorf("timeline: events of jobs %s and %s applied together", jobID, m.JobKey())
		}
		jobID = m.JobKey()
		if ids[i] == "" {
			return fmt.Errorf("timeline: %s of job %s has no message id", e.Kind, jobID)
		}
		e.EventID = ids[i]
		todo = append(todo, pending{e, m})
	}
	if len(todo) == 0 {
		return nil
	}
	err := p.store.Update(ctx, func(ctx context.Context, tx Tx) error {
		h, err := tx.LockHeader(ctx, jobID)
		if err != nil {
			return err
		}
		headerChanged := false
		for _, t := range todo {
			added, err := tx.Append(ctx, jobID, t.entry)
			if err != nil {
				return err
			}
			if !added {
				continue
			}
			next, changed := foldHeader(h, t.event)
			headerChanged = headerChanged || changed
			if next.Step2Closed && !h.Step2Closed {
				if err := tx.FailWaitingSubJobs(ctx, jobID); err != nil {
					return err
				}
			}
			h = next
			if t.entry.Index == NoSubJob {
				continue
			}
			entries, err := tx.SubJobEntries(ctx, jobID, t.entry.Index)
			if err != nil {
				return err
			}
			if err := tx.SaveSubJob(ctx, jobID, foldSubJob(t.entry.Index, entries, h.Step2Closed)); err != nil {
				return err
			}
		}
		if headerChanged {
			return tx.SaveHeader(ctx, h)
		}
		return nil
	})
	if err != nil {
		if len(todo) == 1 {
			return fmt.Errorf("status timeline: apply %s of job %s: %w", todo[0].entry.Kind, jobID, err)
		}
		return fmt.Errorf("status timeline: apply %d reports of job %s: %w", len(todo), jobID, err)
	}
	return nil
}

// Job returns a job's summary. With a tenant set, another tenant's job is not found, and so is a job
// whose JobStarted has not been applied yet (nothing proves whose it is).
func (p *Projection) Job(ctx context.Context, jobID, tenant string) (Summary, error) {
	s, err := p.store.Summary(ctx, jobID)
	if err != nil {
		return Summary{}, fmt.Errorf("status of job %s: %w", jobID, err)
	}
	if tenant != "" && s.Tenant != tenant {
		return Summary{}, fmt.Errorf("status of job %s: %w", jobID, job.ErrNotFound)
	}
	return s, nil
}

// Timeline returns up to limit entries of a job after position afterPos (0 for the first page), in the
// order they were applied. limit is capped at MaxPage (and MaxPage when not positive).
func (p *Projection) Timeline(ctx context.Context, jobID, tenant string, afterPos int64, limit int) ([]Entry, error) {
	if _, err := p.Job(ctx, jobID, tenant); err != nil {
		return nil, err
	}
	entries, err := p.store.Entries(ctx, jobID, afterPos, pageSize(limit))
	if err != nil {
		return nil, fmt.Errorf("timeline of job %s: %w", jobID, err)
	}
	return entries, nil
}

// SubJobs returns up to limit sub-jobs of a job with an index above afterIndex (-1 for the first page),
// in index order, in the given state or any state when it is empty. Only sub-jobs with at least one
// report are listed.
func (p *Projection) SubJobs(ctx context.Context, jobID, tenant string, state job.SubJobState, afterIndex int64, limit int) ([]SubJob, error) {
	if state != "" {
		if _, err := job.ParseSubJobState(string(state)); err != nil {
			return nil, err
		}
	}
	if _, err := p.Job(ctx, jobID, tenant); err != nil {
		return nil, err
	}
	subs, err := p.store.SubJobs(ctx, jobID, state, afterIndex, pageSize(limit))
	if err != nil {
		return nil, fmt.Errorf("sub-jobs of job %s: %w", jobID, err)
	}
	return subs, nil
}

func pageSize(limit int) int {
	if limit <= 0 || limit > MaxPage {
		return MaxPage
	}
	return limit
}
