package service

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/config"
)

// backend is what the configuration's log, queue and store keys resolve to. Only this file and the
// adapters know which backend runs; the rest of the service sees these fields.
type backend struct {
	store job.Store
	// logPublisher publishes to the event log outside any store transaction (worker reports, ticks,
	// poisoned messages).
	logPublisher    message.Publisher
	logSubscriber   func(consumerGroup string) (message.Subscriber, error)
	queueSubscriber func(concurrency int) (message.Subscriber, error)
	rawThroughput   func(ctx context.Context, n int) (float64, error)
	ping            func(ctx context.Context) error
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
	b := &backend{}
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

// attachBrokers is filled in with the Kafka and RabbitMQ transports.
var attachBrokersHook func(b *backend, ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter, db *sql.DB, dialect jobstore.Dialect) error

func (b *backend) attachBrokers(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter, db *sql.DB, dialect jobstore.Dialect) error {
	if attachBrokersHook == nil {
		return fmt.Errorf("log %s / queue %s: %w", cfg.Log, cfg.Queue, ErrUnsupportedBackend)
	}
	return attachBrokersHook(b, ctx, cfg, logger, db, dialect)
}

func (b *backend) openSQLite(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter) error {
	db, err := sqlite.Open(cfg.SQLite.Path)
	if err != nil {
		return err
	}
	b.closers = append(b.closers, db.Close)
	b.ping = func(context.Context) error { return db.Read.Ping() }
	if cfg.Log != config.BackendSQLite || cfg.Queue != config.BackendSQLite {
		return fmt.Errorf("log %s / queue %s with the sqlite store: %w", cfg.Log, cfg.Queue, ErrUnsupportedBackend)
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
	b.queueSubscriber = func(concurrency int) (message.Subscriber, error) {
		return sqlite.NewQueueSubscriber(db, sqlite.QueueSubscriberConfig{Concurrency: concurrency}, logger)
	}
	b.rawThroughput = func(ctx context.Context, n int) (float64, error) { return sqlite.MeasureRawThroughput(ctx, db, n) }
	return nil
}
