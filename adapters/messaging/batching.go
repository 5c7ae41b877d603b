package messaging

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// BatchingPublisher merges concurrent Publish calls to the same topic into one call of the wrapped
// publisher (group commit). Many workers finishing at once then cost one transaction (SQL) or one
// produce request instead of one each. Each caller still returns only after its own messages were
// published, so at-least-once holds: a worker acks its command only after its report is durable.
// Watermill has no such publisher, hence this small one.
type BatchingPublisher struct {
	next    message.Publisher
	maxSize int

	mu      sync.Mutex
	pending map[string]*batch
	// flushing serialises flushes per topic: one batch at a time is in flight while the next one fills.
	flushing map[string]*sync.Mutex
	closed   bool
	wg       sync.WaitGroup
}

type batch struct {
	msgs []*message.Message
	done chan struct{}
	err  error
}

// NewBatchingPublisher wraps next; a batch holds at most maxSize messages.
func NewBatchingPublisher(next message.Publisher, maxSize int) *BatchingPublisher {
	return &BatchingPublisher{next: next, maxSize: max(maxSize, 1), pending: map[string]*batch{}, flushing: map[string]*sync.Mutex{}}
}

var errPublisherClosed = errors.New("publisher closed")

// Publish adds msgs to the topic's open batch and waits until that batch is published. Whoever opens a
// batch publishes it once the previous batch for the topic is out: while one batch is in flight, the
// next one fills up.
func (p *BatchingPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errPublisherClosed
	}
	b, ok := p.pending[topic]
	if ok && len(b.msgs)+len(msgs) <= p.maxSize {
		b.msgs = append(b.msgs, msgs...)
		p.mu.Unlock()
		<-b.done
		return b.err
	}
	b = &batch{msgs: append([]*message.Message(nil), msgs...), done: make(chan struct{})}
	p.pending[topic] = b
	p.wg.Add(1)
	p.mu.Unlock()
	p.flush(topic, b)
	<-b.done
	return b.err
}

func (p *BatchingPublisher) flush(topic string, b *batch) {
	defer p.wg.Done()
	p.mu.Lock()
	mu, ok := p.flushing[topic]
	if !ok {
		mu = &sync.Mutex{}
		p.flushing[topic] = mu
	}
	p.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	p.mu.Lock()
	if p.pending[topic] == b {
		delete(p.pending, topic) // from here on, new messages open the next batch
	}
	msgs := b.msgs
	p.mu.Unlock()
	b.err = p.next.Publish(topic, withBatchContext(msgs)...)
	close(b.done)
}

// withBatchContext drops per-message contexts: a batch is published on behalf of many callers.
func withBatchContext(msgs []*message.Message) []*message.Message {
	for _, m := range msgs {
		m.SetContext(context.Background())
	}
	return msgs
}

// Close waits for batches in flight and closes the wrapped publisher.
func (p *BatchingPublisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	return p.next.Close()
}
