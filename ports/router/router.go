// Package router drives the core from the message transports: the manager's event processor on the log,
// the workers' command handlers on the work queues, and the middleware that keeps a bad message from
// stalling either.
package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/app"
)

// Transport gives the router its subscriptions. The composition root builds it for the configured backend.
type Transport struct {
	// LogSubscriber subscribes a consumer group to the event log.
	LogSubscriber func(consumerGroup string) (message.Subscriber, error)
	// QueueSubscriber subscribes a worker pool of the given concurrency to a work queue.
	QueueSubscriber func(concurrency int) (message.Subscriber, error)
	// PoisonPublisher receives messages that can never be processed.
	PoisonPublisher message.Publisher
}

// Config chooses the roles this process runs.
type Config struct {
	Manager bool
	Worker  bool
	// Projector subscribes every projection of the application to the log.
	Projector bool
	// Workers is how many sub-jobs this process runs at once.
	Workers int
	// StepWorkers is how many step-1 and step-3 commands this process runs at once (each).
	StepWorkers int
}

// New builds the router with the manager's and the workers' handlers.
func New(a app.Application, tr Transport, cfg Config, logger watermill.LoggerAdapter) (*message.Router, error) {
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: 30 * time.Second}, logger)
	if err != nil {
		return nil, err
	}
	r.AddMiddleware(
		Poison(tr.PoisonPublisher, logger),
		middleware.Retry{MaxRetries: 3, InitialInterval: 20 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2, Logger: logger,
			ShouldRetry: func(p middleware.RetryParams) bool {
				return !errors.Is(p.Err, context.Canceled) && !errors.As(p.Err, new(*messaging.DecodeError))
			}}.Middleware,
		middleware.Recoverer,
	)
	if cfg.Manager {
		if err := addManager(r, a, tr, logger); err != nil {
			return nil, err
		}
	}
	if cfg.Projector {
		if err := addProjections(r, a.Projections, tr, logger); err != nil {
			return nil, err
		}
	}
	if cfg.Worker {
		if cfg.Workers < 1 {
			return nil, fmt.Errorf("router: the worker role needs at least 1 worker (got %d)", cfg.Workers)
		}
		if err := addWorkers(r, a, tr, cfg, logger); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func addManager(r *message.Router, a app.Application, tr Transport, logger watermill.LoggerAdapter) error {
	if a.Manager == nil {
		return errors.New("router: manager role without a manager")
	}
	ep, err := cqrs.NewEventGroupProcessorWithConfig(r, cqrs.EventGroupProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.EventGroupProcessorGenerateSubscribeTopicParams) (string, error) {
			return messaging.EventsTopic, nil
		},
		SubscriberConstructor: func(cqrs.EventGroupProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return tr.LogSubscriber(messaging.ManagerGroup)
		},
		// The manager reacts to a subset of the log; the rest (Step2Started, JobCompleted, …) is for others.
		AckOnUnknownEvent: true,
		Marshaler:         messaging.Marshaler,
		Logger:            logger,
	})
	if err != nil {
		return err
	}
	m := a.Manager
	return ep.AddHandlersGroup(messaging.ManagerGroup,
		cqrs.NewGroupEventHandler(m.OnJobStarted),
		cqrs.NewGroupEventHandler(m.OnStep1Completed),
		cqrs.NewGroupEventHandler(m.OnSubJobsReported),
		cqrs.NewGroupEventHandler(m.OnStep2Completed),
		cqrs.NewGroupEventHandler(m.OnStep3Completed),
		cqrs.NewGroupEventHandler(m.OnStepFailed),
		cqrs.NewGroupEventHandler(m.OnTick),
		cqrs.NewGroupEventHandler(m.OnJobCancelled),
	)
}

func addWorkers(r *message.Router, a app.Application, tr Transport, cfg Config, logger watermill.LoggerAdapter) error {
	if a.Worker == nil {
		return errors.New("router: worker role without a worker")
	}
	stepWorkers := max(cfg.StepWorkers, 1)
	cp, err := cqrs.NewCommandProcessorWithConfig(r, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return messaging.WorkTopic(p.CommandName), nil
		},
		SubscriberConstructor: func(p cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			if p.HandlerName == "RunSubJobs" {
				return tr.QueueSubscriber(cfg.Workers)
			}
			return tr.QueueSubscriber(stepWorkers)
		},
		Marshaler: messaging.Marshaler,
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	w := a.Worker
	return cp.AddHandlers(
		cqrs.NewCommandHandler("RunStep1", w.RunStep1),
		cqrs.NewCommandHandler("RunSubJobs", w.RunSubJobs),
		cqrs.NewCommandHandler("RunStep3", w.RunStep3),
	)
}
