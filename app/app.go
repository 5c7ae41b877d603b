// Package app is jobmill's core: the use cases a deployment offers, over the domain in app/job. It
// imports no transport, driver or adapter; ports call it, adapters implement its interfaces.
package app

import (
	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/live"
	"github.com/jobmill/jobmill/app/manager"
	"github.com/jobmill/jobmill/app/projection"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/app/worker"
)

// Application lists every use case by name.
type Application struct {
	Commands Commands
	Queries  Queries
	// Manager reacts to the events of the log.
	Manager *manager.Manager
	// Worker runs the commands of the work queue.
	Worker *worker.Worker
	// Projections are the read models built by consumers of the log of their own (projector role).
	Projections []projection.Projection
	// Live streams job changes to API subscribers.
	Live *live.Hub
	// Tokens authenticates API requests.
	Tokens access.Tokens
}

// Commands change jobs.
type Commands struct {
	SubmitJob          command.SubmitJobHandler
	CancelJob          command.CancelJobHandler
	RetryFailedSubJobs command.RetryFailedSubJobsHandler
}

// Queries read jobs.
type Queries struct {
	JobStatus   query.JobStatusHandler
	ListJobs    query.ListJobsHandler
	ListSubJobs query.ListSubJobsHandler
	JobTypes    query.JobTypesHandler
}
