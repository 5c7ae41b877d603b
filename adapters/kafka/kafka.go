// Package kafka carries jobmill's event log and work queues over Apache Kafka, with watermill-kafka
// (IBM/sarama) underneath.
//
// Ordering: every message is keyed by its partition key (the job id, messaging.PartitionKey), so all
// the messages of one job land on one partition and a consumer group reads them in order.
//
// Delivery is at least once. A subscriber holds one message in flight per partition and commits
// offsets in the background (every second and on close), so a crash redelivers what was handled
// since the last commit.
//
// Kafka as a work queue bounds parallelism by the partition count: a consumer group hands each
// partition to one member, and that member holds one unacknowledged message per partition at a time.
// A work topic of 8 partitions therefore runs at most 8 commands at once across every worker process,
// however many handlers are configured. Create work topics with at least as many partitions as the
// workers you mean to run, or use the AMQP work queue, whose competing consumers have no such bound.
//
// A Nack does not skip a message: it is offered again after Config.NackResendSleep and blocks its
// partition meanwhile. The router retries and moves messages that keep failing to the poison topic,
// so a Nack only reaches the subscriber when that fails too.
//
// The router does not create topics: call CreateTopics at startup.
package kafka

import (
	"errors"
	"fmt"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
)

// Defaults applied by Config for fields left zero.
const (
	DefaultPartitions        = 8
	DefaultReplicationFactor = 1
	DefaultClientID          = "jobmill"
	// DefaultVersion is the Kafka protocol version spoken: new enough for idempotent production,
	// understood by every broker from 2.1 through 4.x, and the newest at which the in-process
	// development broker (devbroker, kfake) decodes sarama's consumer-group requests.
	DefaultVersion          = "2.1.0"
	DefaultNackResendSleep  = 500 * time.Millisecond
	DefaultRebalanceTimeout = 2 * time.Minute
)

// Config selects the Kafka cluster and how jobmill uses it.
type Config struct {
	// Brokers are the bootstrap addresses, host:port.
	Brokers []string
	// Partitions is the partition count CreateTopics gives new topics. It caps the parallelism of a
	// consumer group on the topic (see the package documentation). Default 8.
	Partitions int
	// ReplicationFactor for new topics. Default 1, which suits a single broker; use 3 in production.
	ReplicationFactor int16
	// ClientID names this process to the brokers (quotas, logs). Default "jobmill".
	ClientID string
	// Version is the Kafka protocol version, e.g. "3.6.0". Default 2.1.0.
	Version string
	// NackResendSleep is how long a nacked message waits before it is offered again; it blocks its
	// partition meanwhile. Default 500 ms.
	NackResendSleep time.Duration
	// RebalanceTimeout is how long the group waits for members to rejoin after a rebalance begins. A
	// member rejoins only once its in-flight messages are acknowledged, so this must exceed the longest
	// handler run. Default 2 minutes.
	RebalanceTimeout time.Duration
	// Configure, when set, adjusts every sarama configuration last: TLS, SASL, compression.
	Configure func(*sarama.Config)
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Brokers) == 0 {
		return c, errors.New("kafka: no brokers configured")
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Partitions < 0 {
		return c, fmt.Errorf("kafka: partitions must be positive (got %d)", c.Partitions)
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.NackResendSleep == 0 {
		c.NackResendSleep = DefaultNackResendSleep
	}
	if c.RebalanceTimeout == 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	return c, nil
}

// baseSarama holds the settings shared by producers, consumers and admin clients.
func (c Config) baseSarama() (*sarama.Config, error) {
	v, err := sarama.ParseKafkaVersion(c.Version)
	if err != nil {
		return nil, fmt.Errorf("kafka: version %q: %w", c.Version, err)
	}
	sc := sarama.NewConfig()
	sc.ClientID = c.ClientID
	sc.Version = v
	// Topics are created explicitly with the configured partition count; auto-created topics would get
	// the broker's default instead.
	sc.Metadata.AllowAutoTopicCreation = false
	return sc, nil
}

func (c Config) finish(sc *sarama.Config) (*sarama.Config, error) {
	if c.Configure != nil {
		c.Configure(sc)
	}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafka: sarama configuration: %w", err)
	}
	return sc, nil
}

// producerSarama: idempotent, acknowledged by all in-sync replicas, so a retried produce neither
// duplicates nor reorders a partition.
func (c Config) producerSarama() (*sarama.Config, error) {
	sc, err := c.baseSarama()
	if err != nil {
		return nil, err
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = true
	sc.Net.MaxOpenRequests = 1 // required by the idempotent producer
	sc.Producer.Retry.Max = 10
	sc.Producer.Retry.Backoff = 100 * time.Millisecond
	sc.Producer.Return.Successes = true
	sc.Producer.Return.Errors = true
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	// No linger (Flush.Frequency 0): a publish from a committed reaction should leave at once. Batches
	// still form, from multi-message Publish calls and from whatever queues up while the single
	// in-flight request per broker is out; Flush.MaxMessages caps a batch's size.
	sc.Producer.Flush.MaxMessages = 10_000
	return c.finish(sc)
}

func (c Config) consumerSarama() (*sarama.Config, error) {
	sc, err := c.baseSarama()
	if err != nil {
		return nil, err
	}
	sc.Consumer.Return.Errors = true
	// A new consumer group must read the log from its start, not only what is published after it joins.
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = time.Second
	sc.Consumer.Group.Rebalance.Timeout = c.RebalanceTimeout
	// The coordinator may hold a JoinGroup response for the whole rebalance timeout (while it waits for
	// members that died without leaving, e.g. after a SIGKILL). sarama reads every response under
	// Net.ReadTimeout (30 s by default): shorter, and each join fails with an i/o timeout and starts over,
	// which stalled a group for minutes after crash-restarts. Kafka's own clients do the same.
	sc.Net.ReadTimeout = max(sc.Net.ReadTimeout, c.RebalanceTimeout+5*time.Second)
	return c.finish(sc)
}

func (c Config) adminSarama() (*sarama.Config, error) {
	sc, err := c.baseSarama()
	if err != nil {
		return nil, err
	}
	sc.Admin.Timeout = 10 * time.Second
	return c.finish(sc)
}

// marshaler keys every message by its partition key, so one job's messages share a partition.
var marshaler = wkafka.NewWithPartitioningMarshaler(messaging.PartitionKey)

// NewSubscriber subscribes consumerGroup: every group reads every message of a topic, the members of
// one group share its partitions. A new group starts at the oldest offset.
func NewSubscriber(cfg Config, consumerGroup string, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	return newSubscriber(cfg, consumerGroup, nil, logger)
}

func newSubscriber(cfg Config, consumerGroup string, tracer wkafka.SaramaTracer, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if consumerGroup == "" {
		// Without a group watermill-kafka reads every partition from Offsets.Initial on each start
		// and commits nothing.
		return nil, errors.New("kafka: a subscriber needs a consumer group")
	}
	sc, err := cfg.consumerSarama()
	if err != nil {
		return nil, err
	}
	sub, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
		Brokers:               cfg.Brokers,
		Unmarshaler:           marshaler,
		OverwriteSaramaConfig: sc,
		ConsumerGroup:         consumerGroup,
		NackResendSleep:       cfg.NackResendSleep,
		ReconnectRetrySleep:   time.Second,
		// Lets SubscribeInitialize create a missing topic the way CreateTopics would.
		InitializeTopicDetails: &sarama.TopicDetail{
			NumPartitions:     int32(cfg.Partitions),
			ReplicationFactor: cfg.ReplicationFactor,
		},
		Tracer: tracer,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("kafka: subscriber: %w", err)
	}
	return sub, nil
}

// NewTailSubscriber reads every partition from the newest offset without a consumer group and commits
// nothing: for a process that wants to hear what happens from now on (live views), not to process the
// log.
func NewTailSubscriber(cfg Config, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sc, err := cfg.consumerSarama()
	if err != nil {
		return nil, err
	}
	sc.Consumer.Offsets.Initial = sarama.OffsetNewest
	sc.Consumer.Offsets.AutoCommit.Enable = false
	sub, err := wkafka.NewSubscriber(wkafka.SubscriberConfig{
		Brokers:               cfg.Brokers,
		Unmarshaler:           marshaler,
		OverwriteSaramaConfig: sc,
		ReconnectRetrySleep:   time.Second,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("kafka: tail subscriber: %w", err)
	}
	return sub, nil
}
