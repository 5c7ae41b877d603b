// Package projection defines the read models that independent consumers of the event log build:
// statistics, the detailed status timeline, notifications. Each has its own consumer group, so it can lag,
// fail or be rebuilt without holding up the manager or the others.
package projection

import (
	"context"

	"github.com/jobmill/jobmill/app/job"
)

// Projection folds the events of the log into a read model.
type Projection interface {
	// Name is the projection's consumer group on the log ("stats", "status", "notifier").
	Name() string
	// Apply folds one event in. eventID identifies the message: a transport that delivers a message
	// again delivers the same id, so a projection that records ids applies each message once. Events
	// of one job arrive in log order where the transport keeps order (not on RabbitMQ). An error makes
	// the transport deliver the event again later; it never affects other consumers.
	Apply(ctx context.Context, eventID string, e job.Message) error
	// Reset deletes everything the projection built, before a rebuild replays the log into it.
	Reset(ctx context.Context) error
}

// ReportsApplier is a Projection that folds the reports of one Step2SubjobsReported message in at once, in
// one transaction, instead of one Apply each: a worker's message carries up to dozens of them, and the
// job's own record is then read and written once per message rather than once per report.
type ReportsApplier interface {
	// ApplyReports folds in reports, which all belong to one job, in order; ids[i] identifies reports[i]
	// exactly as Apply's eventID would, so the outcome is the one of applying them one by one.
	ApplyReports(ctx context.Context, ids []string, reports []job.Message) error
}
