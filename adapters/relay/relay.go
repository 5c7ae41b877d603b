// Package relay forwards the outbox to the brokers. The job store's transactions write every event and
// command they emit into an outbox topic of the store's own database (see OutboxPublisher); the relay
// reads that topic in batches and publishes each batch to Kafka or RabbitMQ with one produce request or
// one round of confirms, then advances its offset.
//
// Watermill's forwarder component does the same one message at a time, waiting for the broker before
// the next message; at 1–3 ms per confirm it capped a whole deployment at a few hundred sub-jobs per
// second. This relay keeps the forwarder's guarantees — a message's UUID and metadata (so its partition
// key) are kept, and a crash between publishing and advancing the offset only publishes the batch again,
// which consumers absorb — and reuses watermill-sql's own schema and offsets adapters for reading, so it
// sees rows in the same order and with the same visibility rules as a watermill-sql subscriber.
package relay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

// DestinationMetadata names the topic an outbox message is addressed to.
const DestinationMetadata = "jobmill_destination"

// OutboxPublisher addresses messages to their topic and writes them into the outbox topic through Next,
// a publisher bound to the store's transaction.
type OutboxPublisher struct {
	Next        message.Publisher
	OutboxTopic string
}

// Publish implements message.Publisher.
func (p OutboxPublisher) Publish(topic string, msgs ...*message.Message) error {
	for _, m := range msgs {
		m.Metadata.Set(DestinationMetadata, topic)
	}
	return p.Next.Publish(p.OutboxTopic, msgs...)
}

// Close implements message.Publisher; Next belongs to the transaction.
func (p OutboxPublisher) Close() error { return nil }

// Config is what a relay reads from and publishes to.
type Config struct {
	// DB begins the transactions the relay reads the outbox in.
	DB wsql.Beginner
	// Schema and Offsets are the watermill-sql adapters of the outbox topic, with the batch size to use.
	Schema  wsql.SchemaAdapter
	Offsets wsql.OffsetsAdapter
	Topic   string
	// ConsumerGroup holds the relay's offset; relays of several processes share it and take turns.
	ConsumerGroup string
	// Out receives each batch, grouped by destination topic, in outbox order within each topic.
	Out message.Publisher
	// PollInterval is the wait after finding the outbox empty (default 10 ms).
	PollInterval time.Duration
	Logger       watermill.LoggerAdapter
}

// Run relays until ctx ends. Errors are logged and retried with backoff: the outbox keeps everything
// until it has been published.
func Run(ctx context.Context, cfg Config) error {
	if cfg.DB == nil || cfg.Schema == nil || cfg.Offsets == nil || cfg.Out == nil || cfg.Topic == "" || cfg.ConsumerGroup == "" {
		return errors.New("relay: DB, Schema, Offsets, Out, Topic and ConsumerGroup are required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 10 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = watermill.NopLogger{}
	}
	if err := beforeRelaying(ctx, cfg); err != nil {
		return fmt.Errorf("relay: prepare consumer group %s: %w", cfg.ConsumerGroup, err)
	}
	backoff := cfg.PollInterval
	for ctx.Err() == nil {
		n, err := relayBatch(ctx, cfg)
		wait := time.Duration(0)
		switch {
		case err != nil && ctx.Err() == nil:
			cfg.Logger.Error("Outbox relay failed; retrying", err, watermill.LogFields{"topic": cfg.Topic})
			backoff = min(backoff*2, 5*time.Second)
			wait = backoff
		case n == 0:
			backoff = cfg.PollInterval
			wait = cfg.PollInterval
		default:
			backoff = cfg.PollInterval
		}
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// beforeRelaying runs the offsets adapter's set-up queries, as watermill-sql's subscriber does.
func beforeRelaying(ctx context.Context, cfg Config) error {
	queries, err := cfg.Offsets.BeforeSubscribingQueries(wsql.BeforeSubscribingQueriesParams{Topic: cfg.Topic, ConsumerGroup: cfg.ConsumerGroup})
	if err != nil || len(queries) == 0 {
		return err
	}
	tx, err := cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, q := range queries {
		if _, err := tx.ExecContext(ctx, q.Query, q.Args...); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// relayBatch reads one batch, publishes it and advances the offset, all inside one transaction.
func relayBatch(ctx context.Context, cfg Config) (n int, err error) {
	// The isolation level watermill-sql's subscriber reads this schema with, for the same visibility.
	tx, err := cfg.DB.BeginTx(ctx, &sql.TxOptions{Isolation: cfg.Schema.SubscribeIsolationLevel()})
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	q, err := cfg.Schema.SelectQuery(wsql.SelectQueryParams{Topic: cfg.Topic, ConsumerGroup: cfg.ConsumerGroup, OffsetsAdapter: cfg.Offsets})
	if err != nil {
		return 0, err
	}
	rows, err := tx.QueryContext(ctx, q.Query, q.Args...)
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	var batch []wsql.Row
	for rows.Next() {
		row, err := cfg.Schema.UnmarshalMessage(wsql.UnmarshalMessageParams{Row: rows})
		if err != nil {
			_ = rows.Close()
			return 0, fmt.Errorf("read outbox row: %w", err)
		}
		batch = append(batch, row)
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	if len(batch) == 0 {
		return 0, tx.Commit()
	}
	order, byTopic := groupByDestination(batch, cfg.Logger)
	for _, topic := range order {
		if err := cfg.Out.Publish(topic, byTopic[topic]...); err != nil {
			return 0, fmt.Errorf("publish %d messages to %s: %w", len(byTopic[topic]), topic, err)
		}
	}
	last := batch[len(batch)-1]
	cq, err := cfg.Offsets.ConsumedMessageQuery(wsql.ConsumedMessageQueryParams{Topic: cfg.Topic, Row: last, ConsumerGroup: cfg.ConsumerGroup})
	if err != nil {
		return 0, err
	}
	if !cq.IsZero() {
		if _, err := tx.ExecContext(ctx, cq.Query, cq.Args...); err != nil {
			return 0, fmt.Errorf("record consumed offset: %w", err)
		}
	}
	aq, err := cfg.Offsets.AckMessageQuery(wsql.AckMessageQueryParams{Topic: cfg.Topic, LastRow: last, Rows: batch, ConsumerGroup: cfg.ConsumerGroup})
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, aq.Query, aq.Args...); err != nil {
		return 0, fmt.Errorf("advance offset: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return len(batch), nil
}

// groupByDestination sorts a batch by destination topic, keeping outbox order within each topic. A row
// without a destination cannot be delivered anywhere; it is logged and skipped rather than blocking the
// outbox forever.
func groupByDestination(batch []wsql.Row, logger watermill.LoggerAdapter) ([]string, map[string][]*message.Message) {
	var order []string
	byTopic := map[string][]*message.Message{}
	for _, row := range batch {
		msg := row.Msg
		topic := msg.Metadata.Get(DestinationMetadata)
		if topic == "" {
			logger.Error("Outbox message without a destination skipped", nil, watermill.LogFields{"message_uuid": msg.UUID})
			continue
		}
		delete(msg.Metadata, DestinationMetadata)
		if _, ok := byTopic[topic]; !ok {
			order = append(order, topic)
		}
		byTopic[topic] = append(byTopic[topic], msg)
	}
	return order, byTopic
}
