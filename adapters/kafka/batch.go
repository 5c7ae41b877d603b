package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill"
	wkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// Batch is a transaction that several consecutive messages of one partition are handled in: the
// handlers of the batch's messages find it in their contexts and join it.
type Batch interface {
	// Context attaches the batch to a message's context.
	Context(ctx context.Context) context.Context
	Commit() error
	Rollback() error
}

// BatchConfig bounds a batch.
type BatchConfig struct {
	// Begin returns a new batch; nil means no batching. The job store's database is the usual one: a
	// batch then commits the state changes of many events at once. Begin runs on the subscriber's
	// delivery loop, shared by all partitions, so it must not wait for anything: a batch that needs a
	// connection takes it when its first handler uses it (sqltx.NewLazy). Waiting there for a pool that
	// the open batches hold would stop every partition.
	Begin func() Batch
	// MaxMessages is the most messages in one batch (default 32). A worker's report message carries up to
	// 32 reports, and a batch's staged writes flush before it commits, so more messages per batch delay
	// the commit of the reaction that closes step 2.
	MaxMessages int
	// MaxAge is how long a batch stays open while messages keep coming (default 10ms): it adds to the
	// latency of what the batch decides, such as closing step 2.
	MaxAge time.Duration
}

// NewBatchSubscriber is NewSubscriber whose messages are handled in batches per partition: the messages
// a partition has ready are handled one after the other inside one Batch, which commits once they are
// all acked, and only then are their offsets marked for commit. A crash before the batch commits loses
// its effects and its offsets together, so the messages come again; a crash after it but before the
// offsets reach Kafka delivers them again, and the handlers must absorb that (the manager does).
//
// watermill-kafka waits for each message's ack before it reads the next, and marks the offset as soon as
// the ack comes, so handing the manager a store transaction per event was the only choice; on a server
// database each commit is a round trip and a log flush. This wraps watermill-kafka's consumer-group
// handler (through its tracer hook) to hold the marks back until the batch commits, and a subscriber
// decorator attaches the open batch to each message.
func NewBatchSubscriber(cfg Config, consumerGroup string, batch BatchConfig, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	if batch.Begin == nil {
		return NewSubscriber(cfg, consumerGroup, logger)
	}
	if batch.MaxMessages <= 0 {
		batch.MaxMessages = 32
	}
	if batch.MaxAge <= 0 {
		batch.MaxAge = 10 * time.Millisecond
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	reg := &batchRegistry{cfg: batch, logger: logger, claims: map[string]*partitionBatch{}}
	sub, err := newSubscriber(cfg, consumerGroup, batchTracer{reg: reg}, logger)
	if err != nil {
		return nil, err
	}
	return &batchSubscriber{Subscriber: sub, reg: reg}, nil
}

// claimHeader carries, on each message forwarded to watermill-kafka, the id of the claim that forwarded it.
// The decorator attaches the batch of that very claim: looking the batch up by topic and partition would
// attach a message of an ending claim to the batch of the partition's next claim (rebalances after a
// crash overlap them), and the old claim would then mark its offset while its effects sat in the other
// batch, which could still roll back: the offset committed, the effect lost. The key stays in the
// metadata: a nacked message comes again as the same message, and must find its claim again.
const claimHeader = "_jobmill_batch_claim"

// batchRegistry holds the open claims of this subscriber, by claim id.
type batchRegistry struct {
	cfg    BatchConfig
	logger watermill.LoggerAdapter

	mu     sync.Mutex
	nextID uint64
	claims map[string]*partitionBatch
}

func (r *batchRegistry) get(id string) *partitionBatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.claims[id]
}

// add registers a claim's batch state under a new id.
func (r *batchRegistry) add(p *partitionBatch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextID++
	p.id = strconv.FormatUint(r.nextID, 10)
	r.claims[p.id] = p
}

func (r *batchRegistry) remove(p *partitionBatch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.claims, p.id)
}

// partitionBatch is one claimed partition's batch state.
type partitionBatch struct {
	reg *batchRegistry
	id  string

	mu        sync.Mutex
	batch     Batch
	started   time.Time
	forwarded int
	marked    int
	last      *sarama.ConsumerMessage
	// lastOffset is the offset of the message attached last, to tell a redelivery after a nack.
	lastOffset int64
	markedCh   chan struct{} // signalled on every mark
	// aborted is closed when a handler nacked a message of the open batch: the batch's transaction may
	// be unusable (a dropped connection fails every statement after it), so it is rolled back and the
	// claim starts again from the last committed offset.
	aborted   chan struct{}
	abortOnce sync.Once
}

func (p *partitionBatch) abort() { p.abortOnce.Do(func() { close(p.aborted) }) }

func (p *partitionBatch) isAborted() bool {
	select {
	case <-p.aborted:
		return true
	default:
		return false
	}
}

// attach returns ctx with the partition's open batch, beginning one if none is open. watermill-kafka
// delivers a message again, at the same offset, only after a nack: that aborts the batch, and the
// message is handled on its own transaction until the claim restarts.
func (p *partitionBatch) attach(ctx context.Context) context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	if offset, ok := wkafka.MessagePartitionOffsetFromCtx(ctx); ok {
		if offset == p.lastOffset {
			p.abort()
		}
		p.lastOffset = offset
	}
	if p.isAborted() {
		return ctx
	}
	if p.batch == nil {
		p.batch = p.reg.cfg.Begin()
	}
	return p.batch.Context(ctx)
}

func (p *partitionBatch) mark(m *sarama.ConsumerMessage) {
	p.mu.Lock()
	p.marked++
	p.last = m
	p.mu.Unlock()
	select {
	case p.markedCh <- struct{}{}:
	default:
	}
}

func (p *partitionBatch) forward() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.forwarded == 0 {
		p.started = time.Now()
	}
	p.forwarded++
}

// due says whether the batch should commit before another message joins it.
func (p *partitionBatch) due() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.forwarded >= p.reg.cfg.MaxMessages || (p.forwarded > 0 && time.Since(p.started) >= p.reg.cfg.MaxAge)
}

// commit waits until every forwarded message was acked, commits the batch, then marks the offset of
// the last one. errStopped: the claim ended first (ended closed); the batch was rolled back and its
// messages will come again.
func (p *partitionBatch) commit(sess sarama.ConsumerGroupSession, ended <-chan struct{}) error {
	for {
		p.mu.Lock()
		acked := p.marked == p.forwarded
		p.mu.Unlock()
		if acked {
			break
		}
		select {
		case <-p.markedCh:
		case <-ended:
			p.rollback()
			if p.isAborted() {
				p.reg.logger.Info("Batch rolled back after a handler failed; its messages come again", nil)
			}
			return errStopped
		}
	}
	p.mu.Lock()
	b, last := p.batch, p.last
	p.batch, p.last, p.forwarded, p.marked = nil, nil, 0, 0
	p.mu.Unlock()
	if b != nil {
		if err := b.Commit(); err != nil {
			// Nothing of the batch is stored and its offsets are not marked: ending the claim makes the
			// group start again from the last committed offset.
			return fmt.Errorf("kafka: commit a batch of partition handlers: %w", err)
		}
	}
	if last != nil {
		sess.MarkMessage(last, "")
	}
	return nil
}

func (p *partitionBatch) rollback() {
	p.mu.Lock()
	b := p.batch
	p.batch, p.last, p.forwarded, p.marked = nil, nil, 0, 0
	p.mu.Unlock()
	if b != nil {
		_ = b.Rollback()
	}
}

var errStopped = errors.New("kafka: claim stopped")

// batchTracer hooks into watermill-kafka's consumer through its tracer interface; only the consumer
// group handler is wrapped.
type batchTracer struct{ reg *batchRegistry }

func (batchTracer) WrapConsumer(c sarama.Consumer) sarama.Consumer { return c }
func (batchTracer) WrapPartitionConsumer(pc sarama.PartitionConsumer) sarama.PartitionConsumer {
	return pc
}
func (batchTracer) WrapSyncProducer(_ *sarama.Config, p sarama.SyncProducer) sarama.SyncProducer {
	return p
}
func (t batchTracer) WrapConsumerGroupHandler(h sarama.ConsumerGroupHandler) sarama.ConsumerGroupHandler {
	return batchHandler{inner: h, reg: t.reg}
}

type batchHandler struct {
	inner sarama.ConsumerGroupHandler
	reg   *batchRegistry
}

func (h batchHandler) Setup(s sarama.ConsumerGroupSession) error   { return h.inner.Setup(s) }
func (h batchHandler) Cleanup(s sarama.ConsumerGroupSession) error { return h.inner.Cleanup(s) }

// ConsumeClaim runs watermill-kafka's handler on a copy of the claim whose messages it forwards, closing
// the batch whenever the partition has nothing more ready, the batch is full or old enough.
func (h batchHandler) ConsumeClaim(sess sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	p := &partitionBatch{reg: h.reg, lastOffset: -1, markedCh: make(chan struct{}, 1), aborted: make(chan struct{})}
	h.reg.add(p)
	defer h.reg.remove(p)

	out := make(chan *sarama.ConsumerMessage)
	innerDone := make(chan struct{})
	var innerErr error
	go func() {
		defer close(innerDone)
		innerErr = h.inner.ConsumeClaim(markingSession{ConsumerGroupSession: sess, p: p}, forwardedClaim{ConsumerGroupClaim: claim, out: out})
	}()
	// ended closes when the claim must stop: the session ended, watermill-kafka's handler returned, or a
	// nack aborted the batch.
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		select {
		case <-sess.Context().Done():
		case <-innerDone:
		case <-p.aborted:
		}
	}()
	stop := func(err error) error {
		// Roll back first: the handler may be retrying a nacked message on a transaction of its own, which
		// would wait for the row locks the open batch holds.
		p.rollback()
		close(out)
		<-innerDone
		p.rollback() // a batch the last message began
		if errors.Is(err, errStopped) {
			err = nil
		}
		return errors.Join(err, innerErr)
	}
	for {
		var m *sarama.ConsumerMessage
		var ok bool
		select {
		case m, ok = <-claim.Messages():
		default:
			// Nothing ready: close the batch rather than keep it open while waiting.
			if err := p.commit(sess, ended); err != nil {
				return stop(err)
			}
			select {
			case m, ok = <-claim.Messages():
			case <-ended:
				return stop(nil)
			}
		}
		if !ok {
			return stop(p.commit(sess, ended))
		}
		if p.due() {
			if err := p.commit(sess, ended); err != nil {
				return stop(err)
			}
		}
		m.Headers = append(m.Headers, &sarama.RecordHeader{Key: []byte(claimHeader), Value: []byte(p.id)})
		select {
		case out <- m:
			p.forward()
		case <-ended:
			return stop(nil)
		}
	}
}

// markingSession holds marks back: the batch passes the last one on once it committed.
type markingSession struct {
	sarama.ConsumerGroupSession
	p *partitionBatch
}

func (s markingSession) MarkMessage(m *sarama.ConsumerMessage, _ string) { s.p.mark(m) }

// Commit is a no-op: the batch marks, and the consumer group's auto-commit commits.
func (s markingSession) Commit() {}

// forwardedClaim is a claim whose messages come from the batch loop.
type forwardedClaim struct {
	sarama.ConsumerGroupClaim
	out chan *sarama.ConsumerMessage
}

func (c forwardedClaim) Messages() <-chan *sarama.ConsumerMessage { return c.out }

// batchSubscriber attaches each message's partition batch to its context on the way to the handler.
type batchSubscriber struct {
	message.Subscriber
	reg *batchRegistry
}

func (s *batchSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	in, err := s.Subscriber.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	go func() {
		defer close(out)
		for msg := range in {
			// A claim that already ended leaves its messages without a batch: they are handled on
			// transactions of their own, so marking them is safe.
			if p := s.reg.get(msg.Metadata.Get(claimHeader)); p != nil {
				msg.SetContext(p.attach(msg.Context()))
			}
			out <- msg
		}
	}()
	return out, nil
}
