package service

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/amqp"
	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/kafka"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/metrics"
	"github.com/jobmill/jobmill/adapters/relay"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/sqllog"
	"github.com/jobmill/jobmill/adapters/sqltx"
	"github.com/jobmill/jobmill/config"
)

// OutboxTopic is the store table the relay forwards to the brokers: the store's transactions write their
// events and commands there, so that state and emitted messages commit together whatever the transport.
const OutboxTopic = "jobmill.outbox"

// relayGroup is the relay's consumer group on the outbox.
const relayGroup = "relay"

func isBroker(b string) bool { return b == config.BackendKafka || b == config.BackendAMQP }

// brokers are the Kafka and RabbitMQ ends of a backend.
type brokers struct {
	logPub, queuePub, poisonPub message.Publisher
	// kafkaLog configures the Kafka log's subscribers (nil when the log is not Kafka).
	kafkaLog *kafka.Config
}

// openBrokers connects the broker log and queue the configuration names and declares their topics.
func (b *backend) openBrokers(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter) (*brokers, error) {
	kcfg := kafka.Config{Brokers: cfg.Kafka.Brokers, Partitions: cfg.Kafka.Partitions}
	// connect_timeout 0 means one attempt; a broker still needs a moment to answer that attempt.
	connectTimeout := max(cfg.ConnectTimeout, 5*time.Second)
	uses := func(backend string) bool { return cfg.Log == backend || cfg.Queue == backend }
	out := &brokers{}
	b.readyChecks = append(b.readyChecks, func(ctx context.Context) error {
		// One quick attempt each: readiness must answer within a probe's timeout.
		if uses(config.BackendKafka) {
			if err := kafka.WaitReachable(ctx, kcfg, 2*time.Second); err != nil {
				return err
			}
		}
		if uses(config.BackendAMQP) {
			return amqp.WaitReachable(ctx, cfg.AMQP.URL, 2*time.Second)
		}
		return nil
	})
	if uses(config.BackendKafka) {
		if err := kafka.WaitReachable(ctx, kcfg, connectTimeout); err != nil {
			return nil, err
		}
		topics := []string{messaging.EventsTopic, messaging.PoisonTopic}
		if cfg.Queue == config.BackendKafka {
			topics = append(topics, messaging.WorkTopics()...)
		}
		if err := kafka.CreateTopics(ctx, kcfg, topics...); err != nil {
			return nil, err
		}
		pub, err := kafka.NewPublisher(kcfg, logger)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, pub.Close)
		kafkaLag, err := kafka.NewLagMonitor(kcfg)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, kafkaLag.Close)
		if cfg.Log == config.BackendKafka {
			out.logPub, out.poisonPub = pub, pub
			// Log handlers are short, so a short rebalance timeout: after a crash the group stops waiting
			// for the dead member quickly instead of holding the manager's partitions for minutes.
			logCfg := kcfg
			logCfg.RebalanceTimeout = 15 * time.Second
			out.kafkaLog = &logCfg
			b.logSubscriber = func(group string) (message.Subscriber, error) { return kafka.NewSubscriber(logCfg, group, logger) }
			b.tailSubscriber = func() (message.Subscriber, error) { return kafka.NewTailSubscriber(kcfg, logger) }
			b.resetGroup = func(ctx context.Context, group string) error { return kafka.ResetConsumerGroup(ctx, kcfg, group) }
			b.lag["log"] = func(ctx context.Context) ([]metrics.Lag, error) {
				return kafkaLag.Lag(ctx, messaging.EventsTopic, messaging.LogGroups...)
			}
			b.rawThroughput = func(ctx context.Context, n int) (float64, error) { return kafka.MeasureRawThroughput(ctx, kcfg, n) }
		}
		if cfg.Queue == config.BackendKafka {
			out.queuePub = pub
			// Parallelism on a Kafka work topic is its partition count, whatever the concurrency asked.
			b.queueSubscriber = func(int) (message.Subscriber, error) {
				return kafka.NewSubscriber(kcfg, metrics.WorkQueueConsumer, logger)
			}
			var sources []metrics.LagSource
			for _, topic := range messaging.WorkTopics() {
				sources = append(sources, func(ctx context.Context) ([]metrics.Lag, error) {
					return kafkaLag.Lag(ctx, topic, metrics.WorkQueueConsumer)
				})
			}
			b.lag["queue"] = metrics.JoinLag(sources...)
		}
	}
	if uses(config.BackendAMQP) {
		url := cfg.AMQP.URL
		if err := amqp.WaitReachable(ctx, url, connectTimeout); err != nil {
			return nil, err
		}
		// Poison goes to a durable queue: kept until someone reads it, whatever consumer groups exist.
		queues := []string{messaging.PoisonTopic}
		var logTopics []string
		if cfg.Queue == config.BackendAMQP {
			queues = append(queues, messaging.WorkTopics()...)
		}
		if cfg.Log == config.BackendAMQP {
			logTopics = []string{messaging.EventsTopic}
		}
		if err := amqp.Declare(ctx, url, queues, logTopics, messaging.LogGroups); err != nil {
			return nil, err
		}
		amqpLag := amqp.NewLagMonitor(url)
		b.closers = append(b.closers, amqpLag.Close)
		queuePub, err := amqp.NewQueuePublisher(url, logger)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, queuePub.Close)
		if out.poisonPub == nil {
			out.poisonPub = queuePub
		}
		if cfg.Log == config.BackendAMQP {
			logPub, err := amqp.NewLogPublisher(url, logger)
			if err != nil {
				return nil, err
			}
			b.closers = append(b.closers, logPub.Close)
			out.logPub = logPub
			b.logSubscriber = func(group string) (message.Subscriber, error) { return amqp.NewLogSubscriber(url, group, logger) }
			b.tailSubscriber = func() (message.Subscriber, error) { return amqp.NewTailSubscriber(url, logger) }
			b.lag["log"] = func(ctx context.Context) ([]metrics.Lag, error) {
				return amqpLag.LogLag(ctx, messaging.EventsTopic, messaging.LogGroups...)
			}
			b.rawThroughput = func(ctx context.Context, n int) (float64, error) { return amqp.MeasureRawThroughput(ctx, url, n) }
		}
		if cfg.Queue == config.BackendAMQP {
			out.queuePub = queuePub
			b.queueSubscriber = func(concurrency int) (message.Subscriber, error) {
				return amqp.NewQueueSubscriber(url, concurrency, logger)
			}
			b.lag["queue"] = func(ctx context.Context) ([]metrics.Lag, error) {
				return amqpLag.QueueLag(ctx, messaging.WorkTopics()...)
			}
		}
	}
	return out, nil
}

// routingPublisher sends the relay's messages to the broker of their topic: events to the log, commands
// to the queue.
type routingPublisher struct{ log, queue message.Publisher }

func (p routingPublisher) Publish(topic string, msgs ...*message.Message) error {
	switch {
	case topic == messaging.EventsTopic && p.log != nil:
		return p.log.Publish(topic, msgs...)
	case strings.HasPrefix(topic, messaging.WorkTopicPrefix) && p.queue != nil:
		return p.queue.Publish(topic, msgs...)
	}
	return fmt.Errorf("relay: no broker for topic %q", topic)
}

func (p routingPublisher) Close() error { return nil }

// startRelay runs the outbox relay beside the router for the life of the process.
func (b *backend) startRelay(cfg relay.Config, br *brokers, logger watermill.LoggerAdapter) {
	cfg.Topic, cfg.ConsumerGroup, cfg.Logger = OutboxTopic, relayGroup, logger
	cfg.Out = routingPublisher{log: br.logPub, queue: br.queuePub}
	b.background = append(b.background, func(ctx context.Context) error { return relay.Run(ctx, cfg) })
}

// relayBatch is how many outbox messages the relay publishes per produce request or round of confirms.
const relayBatch = 500

// outboxPublisher wraps a transactional publisher of the store so that what it publishes goes to the
// outbox, addressed to its real topic.
func outboxPublisher(txPub message.Publisher) message.Publisher {
	return relay.OutboxPublisher{Next: txPub, OutboxTopic: OutboxTopic}
}

// openSQLiteWithBrokers runs the job store on SQLite and the log and/or queue on brokers.
func (b *backend) openSQLiteWithBrokers(ctx context.Context, cfg config.Config, db *sqlite.DB, logger watermill.LoggerAdapter) error {
	br, err := b.openBrokers(ctx, cfg, logger)
	if err != nil {
		return err
	}
	if err := sqlite.InitializeLogTopics(ctx, db, OutboxTopic); err != nil {
		return err
	}
	viaOutbox := func(tx *sqlite.HookTx) (message.Publisher, error) {
		pub, err := sqlite.NewTxLogPublisher(tx, logger)
		if err != nil {
			return nil, err
		}
		return outboxPublisher(pub), nil
	}
	store, err := jobstore.NewSQLiteWithOutbox(ctx, db, jobstore.SQLiteOutbox{Events: viaOutbox, Commands: viaOutbox}, logger)
	if err != nil {
		return err
	}
	b.store = store
	b.logPublisher, b.poisonPublisher = br.logPub, br.poisonPub
	b.startRelay(relay.Config{DB: db.Beginner(), Schema: sqlite.LogSchema{SubscribeBatchSize: relayBatch}, Offsets: sqlite.LogOffsets{}}, br, logger)
	b.lag["outbox"] = func(ctx context.Context) ([]metrics.Lag, error) {
		return sqlite.LogLag(ctx, db, OutboxTopic, relayGroup)
	}
	return nil
}

// attachBrokers runs the log and/or the queue on brokers beside a PostgreSQL or MySQL store; whichever of
// them is SQL lives in the store's database (openServerStore set it up).
func (b *backend) attachBrokers(ctx context.Context, cfg config.Config, logger watermill.LoggerAdapter, db *sql.DB, dialect jobstore.Dialect) error {
	br, err := b.openBrokers(ctx, cfg, logger)
	if err != nil {
		return err
	}
	d := sqllog.Dialect(dialect)
	if err := sqllog.Initialize(ctx, db, d, OutboxTopic); err != nil {
		return err
	}
	viaOutbox := func(tx *sql.Tx) (message.Publisher, error) {
		pub, err := sqllog.NewTxPublisher(tx, d)
		if err != nil {
			return nil, err
		}
		return outboxPublisher(pub), nil
	}
	outbox := jobstore.Outbox{Events: viaOutbox, Commands: viaOutbox}
	if !isBroker(cfg.Log) {
		outbox.Events = func(tx *sql.Tx) (message.Publisher, error) { return sqllog.NewTxPublisher(tx, d) }
	}
	if !isBroker(cfg.Queue) {
		outbox.Commands = sqlQueueTxPublisher(dialect)
	}
	store, err := jobstore.NewSQL(ctx, db, dialect, outbox, logger)
	if err != nil {
		return err
	}
	b.closers = append(b.closers, store.Close)
	b.store = store
	if isBroker(cfg.Log) {
		b.logPublisher, b.poisonPublisher = br.logPub, br.poisonPub
	}
	if br.kafkaLog != nil {
		// A partition's ready events are handled in one store transaction that commits before their
		// offsets are marked (see kafka.NewBatchSubscriber): the job store and the read models write
		// behind within it, as they do on an SQL log.
		logCfg := *br.kafkaLog
		batches := kafka.BatchConfig{Begin: func() kafka.Batch { return sqltx.NewLazy(db) }}
		b.logSubscriber = func(group string) (message.Subscriber, error) {
			return kafka.NewBatchSubscriber(logCfg, group, batches, logger)
		}
	}
	schema, offsets, err := sqllog.Adapters(d, relayBatch)
	if err != nil {
		return err
	}
	b.startRelay(relay.Config{DB: sqltx.Beginner{DB: db}, Schema: schema, Offsets: offsets}, br, logger)
	b.lag["outbox"] = func(ctx context.Context) ([]metrics.Lag, error) {
		return sqllog.Lag(ctx, db, d, OutboxTopic, relayGroup)
	}
	return nil
}
