// Package amqp carries jobmill's work queues and event log over RabbitMQ (AMQP 0-9-1), with
// watermill-amqp underneath.
//
// Work queues (NewQueuePublisher, NewQueueSubscriber) are durable queues named after the topic,
// read by competing consumers. A watermill-amqp subscription holds one unacknowledged message at a
// time, so NewQueueSubscriber opens one subscription per unit of concurrency, each with a prefetch of
// one: a busy worker never holds back a message another one could run.
//
// The event log (NewLogPublisher, NewLogSubscriber) is a durable fanout exchange named after the
// topic, with one durable queue per consumer group, "<topic>_<group>". Every group gets every message;
// the members of one group compete for them.
//
// Properties the rest of the engine must not assume away:
//   - No per-key ordering: competing consumers and requeued messages reorder freely. The manager
//     does not rely on order (completions are idempotent by domain key, and each reaction checks the
//     job's state).
//   - A Nack requeues at once and the message may come straight back, in a tight loop. The router's
//     retry middleware spaces out attempts and moves messages that keep failing to the poison topic.
//   - A message published before its queue exists is silently dropped, and so is a log message whose
//     exchange has no group queue bound yet. Call Declare at startup, before anything publishes.
//   - Delivery is at least once: a message unacknowledged when its consumer goes away is requeued.
//   - Publishing while disconnected fails; nothing is buffered.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
)

const (
	// publishChannels bounds each publisher's channels: concurrent Publish calls each use their own,
	// up to this many, and wait beyond.
	publishChannels = 16
	// logPrefetch lets the broker send the next log messages while the current one is handled, which
	// saves a round trip per message. A log subscription still hands out one message at a time.
	logPrefetch = 64
)

func queueConfig(url string) wamqp.Config {
	c := wamqp.NewDurableQueueConfig(url)
	withConfirms(&c)
	return c
}

func logConfig(url, group string) wamqp.Config {
	var gen wamqp.QueueNameGenerator
	if group != "" {
		gen = wamqp.GenerateQueueNameTopicNameWithSuffix(group)
	}
	c := wamqp.NewDurablePubSubConfig(url, gen)
	c.Consume.Qos.PrefetchCount = logPrefetch
	withConfirms(&c)
	return c
}

// withConfirms: Publish returns only once the broker has taken responsibility for each message
// (persisted it, since the durable configurations mark messages persistent). Publisher always
// confirms; the flags describe the configuration to any watermill-amqp publisher built from it.
func withConfirms(c *wamqp.Config) {
	c.Publish.ConfirmDelivery = true
	c.Publish.ChannelPoolSize = publishChannels
}

// NewQueuePublisher publishes to work queues: persistent messages, confirmed by the broker.
func NewQueuePublisher(url string, logger watermill.LoggerAdapter) (message.Publisher, error) {
	logger = orNop(logger)
	p, err := newPublisher(url, queueConfig(url), logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: queue publisher: %w", err)
	}
	return p, nil
}

// NewLogPublisher publishes to the event log: persistent messages, confirmed by the broker, copied
// to the queue of every consumer group bound to the topic's exchange.
func NewLogPublisher(url string, logger watermill.LoggerAdapter) (message.Publisher, error) {
	logger = orNop(logger)
	p, err := newPublisher(url, logConfig(url, ""), logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: log publisher: %w", err)
	}
	return p, nil
}

// NewLogSubscriber subscribes consumerGroup to the event log through its own durable queue. Messages
// published before the group's queue was first declared are not in it (see Declare).
func NewLogSubscriber(url, consumerGroup string, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	logger = orNop(logger)
	if consumerGroup == "" {
		return nil, errors.New("amqp: a log subscriber needs a consumer group")
	}
	s, err := wamqp.NewSubscriber(logConfig(url, consumerGroup), logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: log subscriber for %s: %w", redactURL(url), redactErr(err, url))
	}
	return s, nil
}

// NewTailSubscriber hears log messages published from now on, on a queue of its own that RabbitMQ
// deletes when the subscriber disconnects: for live views, which need no history and must leave nothing
// behind. Messages published while it is disconnected are not seen.
func NewTailSubscriber(url string, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	logger = orNop(logger)
	c := logConfig(url, "live-"+watermill.NewShortUUID())
	c.Queue.Durable = false
	c.Queue.AutoDelete = true
	c.Queue.Exclusive = true
	c.Consume.Qos.PrefetchCount = 100
	s, err := wamqp.NewSubscriber(c, logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: tail subscriber for %s: %w", redactURL(url), redactErr(err, url))
	}
	return s, nil
}

// NewQueueSubscriber reads work queues with concurrency messages in flight: each Subscribe opens
// concurrency subscriptions on one connection, each with a prefetch of one, merged into one channel.
func NewQueueSubscriber(url string, concurrency int, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	logger = orNop(logger)
	if concurrency < 1 {
		return nil, fmt.Errorf("amqp: queue subscriber concurrency must be at least 1 (got %d)", concurrency)
	}
	s, err := wamqp.NewSubscriber(queueConfig(url), logger)
	if err != nil {
		return nil, fmt.Errorf("amqp: queue subscriber for %s: %w", redactURL(url), redactErr(err, url))
	}
	return &QueueSubscriber{sub: s, concurrency: concurrency, closing: make(chan struct{})}, nil
}

// QueueSubscriber runs several watermill-amqp subscriptions per topic and merges them.
type QueueSubscriber struct {
	sub         *wamqp.Subscriber
	concurrency int

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup // forwarding goroutines
}

// Subscribe consumes topic's queue. The channel closes when ctx ends or the subscriber closes; a
// message not yet handed out then is requeued.
func (s *QueueSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("amqp: subscriber closed")
	}
	// Ending subCtx ends every subscription of this call, which is how a failed call undoes the
	// subscriptions it already opened.
	subCtx, cancel := context.WithCancel(ctx)
	ins := make([]<-chan *message.Message, 0, s.concurrency)
	for range s.concurrency {
		in, err := s.sub.Subscribe(subCtx, topic)
		if err != nil {
			cancel()
			for _, in := range ins {
				s.drain(in)
			}
			return nil, fmt.Errorf("amqp: subscribe to %s: %w", topic, err)
		}
		ins = append(ins, in)
	}

	out := make(chan *message.Message)
	var fwd sync.WaitGroup
	for _, in := range ins {
		fwd.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer fwd.Done()
			s.forward(subCtx, in, out)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fwd.Wait()
		cancel()
		close(out)
	}()
	return out, nil
}

// forward passes messages from one subscription to out until the subscription closes. A message
// it cannot hand out is nacked, which requeues it and frees the subscription to notice the end.
func (s *QueueSubscriber) forward(ctx context.Context, in <-chan *message.Message, out chan<- *message.Message) {
	for msg := range in {
		select {
		case out <- msg:
		case <-ctx.Done():
			msg.Nack()
		case <-s.closing:
			msg.Nack()
		}
	}
}

// drain nacks whatever a subscription still delivers until it closes.
func (s *QueueSubscriber) drain(in <-chan *message.Message) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for msg := range in {
			msg.Nack()
		}
	}()
}

// SubscribeInitialize declares topic's queue.
func (s *QueueSubscriber) SubscribeInitialize(topic string) error {
	return s.sub.SubscribeInitialize(topic)
}

// Close ends every subscription, requeues the messages in flight and closes the connection. It
// returns when every output channel is closed.
func (s *QueueSubscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()

	err := s.sub.Close()
	s.wg.Wait()
	return err
}

// orNop replaces a nil logger: watermill-amqp's channel pool calls its logger without a nil check.
func orNop(l watermill.LoggerAdapter) watermill.LoggerAdapter {
	if l == nil {
		return watermill.NopLogger{}
	}
	return l
}
