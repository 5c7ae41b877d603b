package service

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/logtail"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/metrics"
	"github.com/jobmill/jobmill/adapters/sqllog"
	"github.com/jobmill/jobmill/adapters/sqlqueue"
	"github.com/jobmill/jobmill/config"
)

// openServerStore opens the PostgreSQL or MySQL job store, and the log and queue when they live in the
// same database. Brokers for the other roles are attached by the caller.
func (b *backend) openServerStore(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter) (*sql.DB, jobstore.Dialect, error) {
	driver, dsn, dialect, where := "pgx", cfg.Postgres.URL, jobstore.DialectPostgres, cfg.Redacted().Postgres.URL
	if cfg.Store == config.BackendMySQL {
		driver, dsn, dialect, where = "mysql", cfg.MySQL.DSN, jobstore.DialectMySQL, mysqlAddr(cfg.MySQL.DSN)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, "", fmt.Errorf("store %s at %s: %w", cfg.Store, where, err)
	}
	b.closers = append(b.closers, db.Close)
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	if err := waitReachable(ctx, cfg.ConnectTimeout, fmt.Sprintf("%s at %s", cfg.Store, where), db.PingContext); err != nil {
		return nil, "", err
	}
	b.ping = db.PingContext
	d := sqllog.Dialect(dialect)
	if cfg.Log == cfg.Store {
		if err := sqllog.Initialize(ctx, db, d, messaging.EventsTopic, messaging.PoisonTopic); err != nil {
			return nil, "", err
		}
		if b.logPublisher, err = sqllog.NewPublisher(db, d); err != nil {
			return nil, "", err
		}
		b.logSubscriber = func(group string) (message.Subscriber, error) {
			return sqllog.NewSubscriber(db, d, group, logger)
		}
		tail := logtail.Postgres
		if d == sqllog.DialectMySQL {
			tail = logtail.MySQL
		}
		b.tailSubscriber = func() (message.Subscriber, error) {
			return logtail.NewSubscriber(logtail.Config{DB: db, Dialect: tail}, logger)
		}
		b.resetGroup = func(ctx context.Context, group string) error {
			return sqllog.ResetConsumerGroup(ctx, db, d, messaging.EventsTopic, group)
		}
		b.lag["log"] = func(ctx context.Context) ([]metrics.Lag, error) {
			return sqllog.Lag(ctx, db, d, messaging.EventsTopic, messaging.LogGroups...)
		}
		b.rawThroughput = func(ctx context.Context, n int) (float64, error) {
			return sqllog.MeasureRawThroughput(ctx, db, d, n)
		}
	}
	if cfg.Queue == cfg.Store {
		if err := sqlqueue.Initialize(ctx, db, sqlqueue.Dialect(dialect)); err != nil {
			return nil, "", err
		}
		b.lag["queue"] = func(ctx context.Context) ([]metrics.Lag, error) {
			return sqlqueue.Lag(ctx, db, sqlqueue.Dialect(dialect), messaging.WorkTopics()...)
		}
		b.queueSubscriber = func(concurrency int) (message.Subscriber, error) {
			return sqlqueue.NewSubscriber(db, sqlqueue.Dialect(dialect), sqlqueue.SubscriberConfig{Concurrency: concurrency}, logger)
		}
	}
	return db, dialect, nil
}

// openServerBackend runs everything in PostgreSQL or MySQL.
func (b *backend) openServerBackend(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter) error {
	db, dialect, err := b.openServerStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if cfg.Log != cfg.Store || cfg.Queue != cfg.Store {
		return b.attachBrokers(ctx, cfg, logger, db, dialect)
	}
	store, err := jobstore.NewSQL(ctx, db, dialect, jobstore.Outbox{
		Events:   func(tx *sql.Tx) (message.Publisher, error) { return sqllog.NewTxPublisher(tx, sqllog.Dialect(dialect)) },
		Commands: sqlQueueTxPublisher(dialect),
	}, logger)
	if err != nil {
		return err
	}
	b.closers = append(b.closers, store.Close)
	b.store = store
	return nil
}

func sqlQueueTxPublisher(dialect jobstore.Dialect) jobstore.TxPublisher {
	return func(tx *sql.Tx) (message.Publisher, error) {
		return sqlqueue.NewTxPublisher(tx, sqlqueue.Dialect(dialect))
	}
}

// waitReachable retries check with exponential backoff until it succeeds or timeout passes, then
// returns one error naming what could not be reached.
func waitReachable(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	delay := 100 * time.Millisecond
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("cannot reach %s (retried for %s): %w", what, timeout, err)
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// mysqlAddr names the server of a MySQL DSN without its credentials.
func mysqlAddr(dsn string) string {
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return c.Net + "(" + c.Addr + ")/" + c.DBName
}
