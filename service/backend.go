package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/logtail"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/metrics"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
)

// backend is what the configuration's log, queue and store keys resolve to. Only this file and the
// adapters know which backend runs; the rest of the service sees these fields.
type backend struct {
	store job.Store
	// logPublisher publishes to the event log outside any store transaction (worker reports, ticks).
	logPublisher message.Publisher
	// poisonPublisher receives malformed messages (the log publisher unless set).
	poisonPublisher message.Publisher
	logSubscriber   func(consumerGroup string) (message.Subscriber, error)
	// tailSubscriber hears log events from now on without a consumer group (live views).
	tailSubscriber  func() (message.Subscriber, error)
	queueSubscriber func(concurrency int) (message.Subscriber, error)
	rawThroughput   func(ctx context.Context, n int) (float64, error)
	ping            func(ctx context.Context) error
	// readyChecks are checked after ping by readiness probes (brokers beside the store).
	readyChecks []func(ctx context.Context) error
	// lag measures how far each consumer is behind, by source name ("log", "queue", "outbox").
	lag map[string]metrics.LagSource
	// resetGroup moves a consumer group of the log back to its start (rebuilds); nil when the log cannot
	// be replayed (RabbitMQ).
	resetGroup func(ctx context.Context, group string) error
	// background runs beside the router for the whole life of the process (the outbox relay).
	background []func(ctx context.Context) error
	closers    []func() error
}

func (b *backend) close() error {
	var err error
	for i := len(b.closers) - 1; i >= 0; i-- {
		err = errors.Join(err, b.closers[i]())
	}
	return err
}

// openBackend connects to what cfg names and prepares topics, queues and schemas.
func openBackend(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter) (*backend, error) {
	if err := checkCombination(cfg); err != nil {
		return nil, err
	}
	b := &backend{lag: map[string]metrics.LagSource{}}
	var err error
	switch cfg.Store {
	case config.BackendSQLite:
		err = b.openSQLite(ctx, cfg, logger)
	case config.BackendPostgres, config.BackendMySQL:
		err = b.openServerBackend(ctx, cfg, logger)
	default:
		err = fmt.Errorf("store: %w: %q", ErrUnsupportedBackend, cfg.Store)
	}
	if err != nil {
		_ = b.close()
		return nil, err
	}
	if b.poisonPublisher == nil {
		b.poisonPublisher = b.logPublisher
	}
	return b, nil
}

// checkCombination refuses combinations that cannot work: an SQL log or queue lives in the store's own
// database, so that the outbox is the transport's table.
func checkCombination(cfg config.Config) error {
	for key, v := range map[string]string{"log": cfg.Log, "queue": cfg.Queue} {
		switch v {
		case config.BackendSQLite, config.BackendPostgres, config.BackendMySQL:
			if v != cfg.Store {
				return &config.Error{Key: key, Problem: fmt.Sprintf("%s %s needs store %s too (got store %s): an SQL %s lives in the store's database", key, v, v, cfg.Store, key)}
			}
		}
	}
	return nil
}

func (b *backend) openSQLite(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter) error {
	db, err := sqlite.Open(cfg.SQLite.Path)
	if err != nil {
		return err
	}
	b.closers = append(b.closers, db.Close)
	b.ping = func(context.Context) error { return db.Read.Ping() }
	if isBroker(cfg.Log) || isBroker(cfg.Queue) {
		if !isBroker(cfg.Log) || !isBroker(cfg.Queue) {
			return &config.Error{Key: "queue", Problem: "with the sqlite store, log and queue are either both sqlite or both brokers (kafka, amqp)"}
		}
		return b.openSQLiteWithBrokers(ctx, cfg, db, logger)
	}
	if err := sqlite.InitializeLogTopics(ctx, db, messaging.EventsTopic, messaging.PoisonTopic); err != nil {
		return err
	}
	if err := sqlite.InitializeQueue(ctx, db); err != nil {
		return err
	}
	if b.store, err = jobstore.NewSQLite(ctx, db, logger); err != nil {
		return err
	}
	if b.logPublisher, err = sqlite.NewLogPublisher(db, logger); err != nil {
		return err
	}
	b.logSubscriber = func(group string) (message.Subscriber, error) {
		return sqlite.NewLogSubscriber(db, group, sqlite.LogSubscriberConfig{}, logger)
	}
	b.tailSubscriber = func() (message.Subscriber, error) {
		return logtail.NewSubscriber(logtail.Config{DB: db.Read, Dialect: logtail.SQLite}, logger)
	}
	b.resetGroup = func(ctx context.Context, group string) error {
		return sqlite.ResetConsumerGroup(ctx, db, messaging.EventsTopic, group)
	}
	b.lag["log"] = func(ctx context.Context) ([]metrics.Lag, error) {
		return sqlite.LogLag(ctx, db, messaging.EventsTopic, messaging.LogGroups...)
	}
	b.lag["queue"] = func(ctx context.Context) ([]metrics.Lag, error) {
		return sqlite.QueueLag(ctx, db, messaging.WorkTopics()...)
	}
	b.queueSubscriber = func(concurrency int) (message.Subscriber, error) {
		return sqlite.NewQueueSubscriber(db, sqlite.QueueSubscriberConfig{Concurrency: concurrency}, logger)
	}
	b.rawThroughput = func(ctx context.Context, n int) (float64, error) { return sqlite.MeasureRawThroughput(ctx, db, n) }
	return nil
}
