package kafka

import (
	"errors"
	"fmt"
	"sync"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Publisher publishes to Kafka with the same wire format as watermill-kafka's publisher (its
// partitioning marshaler), but sends a multi-message Publish as one batch. watermill-kafka's own
// Publisher sends and awaits each message in turn, one produce round trip per message, which caps a
// dispatch window of thousands of commands at the round-trip rate.
type Publisher struct {
	producer sarama.SyncProducer
	logger   watermill.LoggerAdapter

	// mu keeps Close from closing the producer under a running Publish: sarama panics on a send to a
	// closed producer.
	mu     sync.RWMutex
	closed bool
}

// NewPublisher connects an idempotent producer (acks from all in-sync replicas) to cfg.Brokers.
// Messages are keyed by messaging.PartitionKey, so one job's messages stay in order on one partition.
func NewPublisher(cfg Config, logger watermill.LoggerAdapter) (message.Publisher, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sc, err := cfg.producerSarama()
	if err != nil {
		return nil, err
	}
	producer, err := sarama.NewSyncProducer(cfg.Brokers, sc)
	if err != nil {
		return nil, fmt.Errorf("kafka: producer for %v: %w", cfg.Brokers, err)
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Publisher{producer: producer, logger: logger}, nil
}

// Publish sends msgs to topic and returns once every one is acknowledged. Messages with the same
// partition key are stored in the order given. On error some messages may have been stored; the
// caller retries the whole call (consumers tolerate duplicates).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errors.New("kafka: publisher closed")
	}
	if len(msgs) == 0 {
		return nil
	}
	pms := make([]*sarama.ProducerMessage, len(msgs))
	for i, msg := range msgs {
		pm, err := marshaler.Marshal(topic, msg)
		if err != nil {
			return fmt.Errorf("kafka: marshal message %s: %w", msg.UUID, err)
		}
		pms[i] = pm
	}
	if len(pms) == 1 {
		if _, _, err := p.producer.SendMessage(pms[0]); err != nil {
			return fmt.Errorf("kafka: publish to %s: %w", topic, err)
		}
	} else if err := p.producer.SendMessages(pms); err != nil {
		return fmt.Errorf("kafka: publish %d messages to %s: %w", len(pms), topic, summarize(err))
	}
	p.logger.Trace("Published to Kafka", watermill.LogFields{"topic": topic, "messages": len(pms)})
	return nil
}

// summarize shortens sarama's per-message error list to its first error and a count.
func summarize(err error) error {
	var perrs sarama.ProducerErrors
	if errors.As(err, &perrs) && len(perrs) > 0 {
		return fmt.Errorf("%d failed, first: %w", len(perrs), perrs[0].Err)
	}
	return err
}

// Close flushes and closes the producer.
func (p *Publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if err := p.producer.Close(); err != nil {
		return fmt.Errorf("kafka: close producer: %w", err)
	}
	return nil
}
