package router

import (
	"context"
	"errors"
	"strconv"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/projection"
)

// addProjections subscribes each projection to the log as a consumer group of its own: a projection that
// fails or lags holds up only itself.
func addProjections(r *message.Router, projections []projection.Projection, tr Transport, logger watermill.LoggerAdapter) error {
	if len(projections) == 0 {
		return nil
	}
	ep, err := cqrs.NewEventGroupProcessorWithConfig(r, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) {
			return messaging.EventsTopic, nil
		},
		SubscriberConstructor: func(p cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return tr.LogSubscriber(p.EventGroupName)
		},
		AckOnUnknownEvent: true,
		Marshaler:         messaging.Marshaler,
		Logger:            logger,
	})
	if err != nil {
		return err
	}
	for _, p := range projections {
		if p == nil || p.Name() == "" || p.Name() == messaging.ManagerGroup {
			return errors.New("router: a projection needs a name of its own")
		}
		if err := ep.AddHandlersGroup(p.Name(),
			applyTo[job.JobStarted](p), applyTo[job.Step1Completed](p), applyTo[job.Step2Started](p),
			applyReportsTo(p), applyTo[job.Step2Completed](p),
			applyTo[job.Step3Completed](p), applyTo[job.StepFailed](p), applyTo[job.JobCompleted](p),
			applyTo[job.JobFailed](p), applyTo[job.JobCancelled](p), applyTo[job.AttemptTimedOut](p),
		); err != nil {
			return err
		}
	}
	return nil
}

// applyTo hands one event type to a projection with the message's UUID, which a redelivery keeps.
func applyTo[T any](p projection.Projection) cqrs.GroupEventHandler {
	return cqrs.NewGroupEventHandler(func(ctx context.Context, e *T) error {
		m, ok := any(*e).(job.Message)
		if !ok {
			return errors.New("router: projection handler for a type that is not a jobmill message")
		}
		id := ""
		if msg := cqrs.OriginalMessageFromCtx(ctx); msg != nil {
			id = msg.UUID
		}
		return p.Apply(ctx, id, m)
	})
}

// applyReportsTo hands the reports of a Step2SubjobsReported to a projection, all at once when it is a
// ReportsApplier, else one by one as the events they stand for.
// Each gets an id of its own derived from the message's UUID, so a redelivered message is recognised report
// by report, and two equal reports in one message count as two deliveries, as they would have alone.
func applyReportsTo(p projection.Projection) cqrs.GroupEventHandler {
	return cqrs.NewGroupEventHandler(func(ctx context.Context, e *job.Step2SubjobsReported) error {
		id := ""
		if msg := cqrs.OriginalMessageFromCtx(ctx); msg != nil {
			id = msg.UUID
		}
		reports := e.Reports()
		ids := make([]string, len(reports))
		if id != "" {
			for i := range ids {
				ids[i] = id + "/" + strconv.Itoa(i)
			}
		}
		if batch, ok := p.(projection.ReportsApplier); ok && len(reports) > 0 {
			return batch.ApplyReports(ctx, ids, reports)
		}
		for i, r := range reports {
			if err := p.Apply(ctx, ids[i], r); err != nil {
				return err
			}
		}
		return nil
	})
}
