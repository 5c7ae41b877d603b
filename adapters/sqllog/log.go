// Package sqllog is the event log on PostgreSQL and MySQL/MariaDB: watermill-sql's offset-based
// transport, one table per topic, one offsets row per consumer group. Every consumer group reads every
// message in order, one message in flight at a time.
//
// The subscriber holds a transaction while a batch of messages is handled, and on each server that
// transaction reaches beyond its topic:
//
//   - PostgreSQL: messages become visible only below pg_snapshot_xmin, which is database-wide. Any long
//     transaction (a slow log handler included) delays delivery on every log topic. Keep log handlers and
//     store transactions short.
//   - MySQL/MariaDB: the subscriber's read waits for transactions that inserted into the topic and have
//     not committed yet (so that no message is skipped), so a long transaction that published to the log
//     delays its consumers. See mysqlSchema for why this is not watermill's SERIALIZABLE.
package sqllog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/sqltx"
)

// Dialect names the SQL server the log runs on.
type Dialect string

const (
	DialectPostgres Dialect = "postgres"
	// DialectMySQL covers MySQL 8 and MariaDB.
	DialectMySQL Dialect = "mysql"
)

const (
	// BatchSize is how many messages a subscriber reads per transaction. The offsets adapters store the
	// offset of the last message acked in order, so a batch cut short (Nack deadline, Close) commits only
	// what was acked and nothing is skipped; a larger batch costs only a longer transaction. 32, not more:
	// a worker's report message carries up to a command's worth of reports (32), and the batch's staged
	// writes flush before its commit, so a larger batch delays the commit of the reaction that closes
	// step 2 (100 gave a 22–28 ms fan-in on PostgreSQL, 32 gives 9–15 ms, at the same throughput).
	BatchSize = 32

	pollInterval   = 10 * time.Millisecond
	resendInterval = 100 * time.Millisecond
	retryInterval  = 100 * time.Millisecond
)

func (d Dialect) schema() (wsql.SchemaAdapter, wsql.OffsetsAdapter, error) {
	return Adapters(d, BatchSize)
}

// Adapters returns the watermill-sql schema and offsets adapters of the log for dialect, reading up to
// batchSize messages per query. The outbox relay consumes with them in batches of its own.
func Adapters(d Dialect, batchSize int) (wsql.SchemaAdapter, wsql.OffsetsAdapter, error) {
	switch d {
	case DialectPostgres:
		// BYTEA, not watermill's default JSON: the poison topic must accept payloads that are not JSON,
		// and bytes skip the server's JSON parsing.
		return wsql.DefaultPostgreSQLSchema{
				GeneratePayloadType: func(string) string { return "BYTEA" },
				SubscribeBatchSize:  batchSize,
			},
			wsql.DefaultPostgreSQLOffsetsAdapter{}, nil
	case DialectMySQL:
		// LONGBLOB: MariaDB's JSON is a checked LONGTEXT, and BLOB stops at 64 KiB.
		return mysqlSchema{wsql.DefaultMySQLSchema{
				GeneratePayloadType: func(string) string { return "LONGBLOB" },
				SubscribeBatchSize:  batchSize,
			}},
			wsql.DefaultMySQLOffsetsAdapter{}, nil
	}
	return nil, nil, fmt.Errorf("sqllog: unknown dialect %q", d)
}

// mysqlSchema reads the log at READ COMMITTED with a shared-lock read instead of watermill's SERIALIZABLE.
//
// Both wait for a row inserted by a transaction that has not committed yet, so a message committed late
// is never skipped by an offset that moved past it. But SERIALIZABLE also locks the gap after the newest
// message for as long as the batch is being handled, so every insert into the topic waits for the
// subscriber's commit: a handler that publishes to the topic it consumes (the manager emits events to the
// log it reads) would wait for its own subscriber until innodb_lock_wait_timeout. READ COMMITTED locks
// records only.
type mysqlSchema struct{ wsql.DefaultMySQLSchema }

func (s mysqlSchema) SelectQuery(params wsql.SelectQueryParams) (wsql.Query, error) {
	q, err := s.DefaultMySQLSchema.SelectQuery(params)
	if err != nil {
		return q, err
	}
	q.Query += " LOCK IN SHARE MODE"
	return q, nil
}

func (mysqlSchema) SubscribeIsolationLevel() sql.IsolationLevel { return sql.LevelReadCommitted }

// Initialize creates the message and offsets tables of topics. Subscribers also create them on
// Subscribe; transactional publishers cannot (MySQL commits DDL implicitly), so call this at startup.
func Initialize(ctx context.Context, db *sql.DB, dialect Dialect, topics ...string) error {
	schema, offsets, err := dialect.schema()
	if err != nil {
		return err
	}
	for _, topic := range topics {
		if err := validateTopic(topic); err != nil {
			return err
		}
		queries, err := schema.SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams{Topic: topic})
		if err != nil {
			return err
		}
		more, err := offsets.SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams{Topic: topic})
		if err != nil {
			return err
		}
		// In one transaction: on PostgreSQL the schema's first query is an advisory lock that keeps
		// concurrent CREATE TABLE IF NOT EXISTS from failing.
		if err := inTx(ctx, db, append(queries, more...)); err != nil {
			return fmt.Errorf("sqllog: initialize topic %s: %w", topic, err)
		}
	}
	return nil
}

func inTx(ctx context.Context, db *sql.DB, queries []wsql.Query) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, q := range queries {
		if _, err := tx.ExecContext(ctx, q.Query, q.Args...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// validateTopic applies watermill-sql's topic rule (letters, digits and -$:._), which also keeps the
// quoted table names injection-free.
func validateTopic(topic string) error {
	if topic == "" {
		return errors.New("sqllog: empty topic")
	}
	for _, r := range topic {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-$:._", r):
		default:
			return fmt.Errorf("sqllog: topic %q: %w", topic, wsql.ErrInvalidTopicName)
		}
	}
	return nil
}

// NewPublisher returns a log publisher on db. Each Publish is one multi-row INSERT (atomic, in order);
// it creates a topic's tables on first use.
func NewPublisher(db *sql.DB, dialect Dialect) (message.Publisher, error) {
	schema, _, err := dialect.schema()
	if err != nil {
		return nil, err
	}
	return wsql.NewPublisher(wsql.BeginnerFromStdSQL(db), wsql.PublisherConfig{
		SchemaAdapter:        schema,
		AutoInitializeSchema: true,
	}, nil)
}

// NewTxPublisher returns a publisher that inserts inside tx (the outbox): nothing is delivered unless tx
// commits. The topics' tables must exist (Initialize). It must not be used after tx ends.
func NewTxPublisher(tx *sql.Tx, dialect Dialect) (message.Publisher, error) {
	if tx == nil {
		return nil, errors.New("sqllog: nil transaction")
	}
	schema, _, err := dialect.schema()
	if err != nil {
		return nil, err
	}
	return wsql.NewPublisher(wsql.TxFromStdSQL(tx), wsql.PublisherConfig{SchemaAdapter: schema}, nil)
}

// NewSubscriber returns a subscriber of consumerGroup. Subscribers of one group, in any number of
// processes, share its offset: each message is handled by one of them, in order, one at a time. A
// Nacked message is delivered again after 100ms.
func NewSubscriber(db *sql.DB, dialect Dialect, consumerGroup string, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	schema, offsets, err := dialect.schema()
	if err != nil {
		return nil, err
	}
	// sqltx transactions let the job store join the batch's transaction (see package sqltx).
	return wsql.NewSubscriber(sqltx.Beginner{DB: db}, wsql.SubscriberConfig{
		ConsumerGroup:    consumerGroup,
		PollInterval:     pollInterval,
		ResendInterval:   resendInterval,
		RetryInterval:    retryInterval,
		SchemaAdapter:    schema,
		OffsetsAdapter:   offsets,
		InitializeSchema: true,
	}, logger)
}
