package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/projection"
)

// JobReader finds a job's tenant; the job store is one.
type JobReader interface {
	GetJob(ctx context.Context, id string) (*job.Job, error)
}

// tenantCacheSize bounds the projection's memory of job tenants (a tenant never changes).
const tenantCacheSize = 4096

// Projection records the deliveries that the events of the log call for. It never sends anything:
// Apply costs a few statements in the consumer's transaction, whatever the receivers do.
type Projection struct {
	store  Store
	jobs   JobReader
	now    func() time.Time
	logger *slog.Logger

	mu      sync.Mutex
	tenants map[string]string
}

var _ projection.Projection = (*Projection)(nil)

// NewProjection needs the store of deliveries, a reader of jobs (for the tenant of events that do not
// carry it), a clock and a logger.
func NewProjection(store Store, jobs JobReader, now func() time.Time, logger *slog.Logger) (*Projection, error) {
	if store == nil || jobs == nil || now == nil || logger == nil {
		return nil, errors.New("notify projection: store, job reader, clock and logger are required")
	}
	return &Projection{store: store, jobs: jobs, now: now, logger: logger, tenants: map[string]string{}}, nil
}

// Name implements projection.Projection.
func (p *Projection) Name() string { return "notifier" }

// Apply implements projection.Projection. Events that mean no notification (most of them: sub-job reports,
// ticks) cost nothing. The others record their deliveries once, whatever the order and number of times
// they arrive: the delivery id is derived from the notification, not from the event.
func (p *Projection) Apply(ctx context.Context, eventID string, e job.Message) error {
	ns := Notifications(e)
	if len(ns) == 0 {
		return nil
	}
	tenant, err := p.tenant(ctx, ns[0])
	if errors.Is(err, job.ErrNotFound) {
		// Nothing can ever deliver it; retrying would only hold up the notifier's log.
		p.logger.WarnContext(ctx, "notifier: event for an unknown job ignored", "job", ns[0].JobID, "event", eventID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("notifier: tenant of job %s: %w", ns[0].JobID, err)
	}
	for i := range ns {
		ns[i].Tenant = tenant
	}
	if _, err := p.store.RecordDeliveries(ctx, tenant, ns, p.now()); err != nil {
		return fmt.Errorf("notifier: record deliveries of job %s: %w", ns[0].JobID, err)
	}
	return nil
}

// Reset implements projection.Projection: it deletes the deliveries, not the webhooks. Replaying the log
// records again the deliveries of everything since each webhook was registered, with the same ids, and
// sends them again.
func (p *Projection) Reset(ctx context.Context) error {
	return p.store.ResetDeliveries(ctx)
}

// tenant is the tenant of n's job: from the event when it carries it (JobStarted), otherwise from the job
// store. The job row is written with JobStarted in one transaction, so it is there whichever of the job's
// events arrives first.
func (p *Projection) tenant(ctx context.Context, n Notification) (string, error) {
	tenant := n.Tenant
	if tenant == "" {
		p.mu.Lock()
		cached, ok := p.tenants[n.JobID]
		p.mu.Unlock()
		if ok {
			return cached, nil
		}
		j, err := p.jobs.GetJob(ctx, n.JobID)
		if err != nil {
			return "", err
		}
		tenant = j.Tenant
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.tenants) >= tenantCacheSize {
		clear(p.tenants)
	}
	p.tenants[n.JobID] = tenant
	return tenant, nil
}
