package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
)

// The work queue: competing consumers, at-least-once delivery, duplicates
// possible. Unlike the event log it never holds a transaction while a handler
// runs. A subscriber claims rows with a lease (available_at moved into the
// future, deliveries incremented) in one short statement; while a message is
// outstanding a heartbeat keeps extending the lease; an Ack deletes the row, a
// Nack makes it available again after NackDelay. A subscriber that dies
// simply stops extending its leases, and the rows come back when they expire.
// Messages are claimed oldest-available first (publish time, or the end of a
// nack delay or lease), which the (topic, available_at, offset) index serves
// without sorting however long the backlog; there is no ordering guarantee.
// The deliveries counter fences lease updates: a subscriber only extends,
// releases or nacks a row whose deliveries still equals the value its claim
// returned.

// DeliveriesMetadataKey is the metadata key holding how many times a queue
// message has been delivered, this delivery included ("1" the first time).
const DeliveriesMetadataKey = "jobmill_deliveries"

// MetadataErrorKey is set, instead of the stored metadata, on a message whose metadata cannot be decoded.
const MetadataErrorKey = "jobmill_metadata_error"

const (
	queueTable = "jobmill_queue"

	defaultQueueConcurrency = 16
	// defaultQueueLease is how soon work held by a crashed process goes to another worker. Live holders
	// extend their leases every Lease/3, so a short lease costs a few cheap updates, not redeliveries.
	defaultQueueLease     = 10 * time.Second
	defaultQueueNackDelay = 100 * time.Millisecond
	defaultQueuePoll      = 50 * time.Millisecond
	queueRetryInterval    = 100 * time.Millisecond
	// claimCoalesce is how long a claim waits for more free slots when only a few are free.
	claimCoalesce = time.Millisecond

	// queueInsertChunk keeps one INSERT under SQLite's bound-parameter limit
	// (six per row).
	queueInsertChunk = 1000

	ackBatchMax   = 256
	ackBatchDelay = 2 * time.Millisecond
)

var queueSchema = []string{
	`CREATE TABLE IF NOT EXISTS ` + queueTable + ` (
		"offset" INTEGER PRIMARY KEY AUTOINCREMENT,
		topic TEXT NOT NULL,
		uuid TEXT NOT NULL,
		payload BLOB,
		metadata TEXT,
		available_at INTEGER NOT NULL,
		deliveries INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER
	)`,
	`CREATE INDEX IF NOT EXISTS ` + queueTable + `_claim ON ` + queueTable + ` (topic, available_at, "offset")`,
}

// InitializeQueue creates the queue table. Publishers and subscribers also
// create it on first use.
func InitializeQueue(ctx context.Context, db *DB) error {
	return db.InTx(ctx, func(tx *HookTx) error { return initQueue(ctx, tx) })
}

func initQueue(ctx context.Context, tx *HookTx) error {
	if tx.db.queueReady.Load() {
		return nil
	}
	for _, q := range queueSchema {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("sqlite: create queue table in %s: %w", tx.db.Path, err)
		}
	}
	// SQLite DDL is transactional: the table exists only once this commits.
	db := tx.db
	tx.AfterCommit(func() { db.queueReady.Store(true) })
	return nil
}

// queuePublisher inserts queue messages and wakes local subscribers after commit.
type queuePublisher struct {
	db     *DB
	tx     *HookTx // nil: each Publish runs in its own transaction
	closed atomic.Bool
}

// NewQueuePublisher returns a publisher of work-queue messages. Each Publish
// call is one transaction, so a multi-message Publish is atomic. Like
// NewLogPublisher, it joins the transaction carried by the first message's
// context, if any.
func NewQueuePublisher(db *DB) message.Publisher {
	return &queuePublisher{db: db}
}

// NewTxQueuePublisher returns a publisher that inserts inside tx. Subscribers
// are woken after tx commits; nothing is delivered if it rolls back. It must
// not be used after tx ends.
func NewTxQueuePublisher(tx *HookTx) message.Publisher {
	return &queuePublisher{db: tx.db, tx: tx}
}

func (p *queuePublisher) Publish(topic string, messages ...*message.Message) error {
	if p.closed.Load() {
		return errors.New("sqlite: queue publisher is closed")
	}
	if topic == "" {
		return errors.New("sqlite: empty topic")
	}
	if len(messages) == 0 {
		return nil
	}
	ctx := messages[0].Context()
	if p.tx != nil {
		return p.publishIn(ctx, p.tx, topic, messages)
	}
	return p.db.InTx(ctx, func(tx *HookTx) error { return p.publishIn(ctx, tx, topic, messages) })
}

func (p *queuePublisher) publishIn(ctx context.Context, tx *HookTx, topic string, messages []*message.Message) error {
	if err := initQueue(ctx, tx); err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	for len(messages) > 0 {
		n := min(len(messages), queueInsertChunk)
		args := make([]any, 0, 6*n)
		for _, msg := range messages[:n] {
			md, err := marshalMetadata(msg)
			if err != nil {
				return err
			}
			args = append(args, topic, msg.UUID, []byte(msg.Payload), md, now, now)
		}
		q := `INSERT INTO ` + queueTable + ` (topic, uuid, payload, metadata, available_at, created_at) VALUES ` +
			strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?),", n), ",")
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("sqlite: publish to queue %s: %w", topic, err)
		}
		messages = messages[n:]
	}
	db := p.db
	tx.AfterCommit(func() { db.notify.Notify(queueKey(topic)) })
	return nil
}

func (p *queuePublisher) Close() error {
	p.closed.Store(true)
	return nil
}

// QueueSubscriberConfig configures NewQueueSubscriber. Zero values take the defaults.
type QueueSubscriberConfig struct {
	// Concurrency is the maximum number of unacked messages outstanding per
	// Subscribe call. A Watermill router handles each delivered message in its
	// own goroutine, so this is the number of parallel workers. Default 16.
	Concurrency int
	// Lease is the visibility timeout of a claimed message. It is extended by
	// a heartbeat every Lease/3 while the message is outstanding, so it only
	// expires when the subscriber's process stops. Default 30s.
	Lease time.Duration
	// NackDelay is how long a Nacked message stays invisible before it is
	// delivered again. Default 100ms.
	NackDelay time.Duration
	// PollInterval is the longest an idle subscription waits before looking
	// for messages; publishers of the same DB wake it at once. Default 50ms.
	PollInterval time.Duration
}

func (c *QueueSubscriberConfig) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = defaultQueueConcurrency
	}
	if c.Lease <= 0 {
		c.Lease = defaultQueueLease
	}
	if c.NackDelay <= 0 {
		c.NackDelay = defaultQueueNackDelay
	}
	if c.PollInterval <= 0 {
		c.PollInterval = defaultQueuePoll
	}
}

// queueSubscriber is the work-queue subscriber. Acks of all its
// subscriptions go to one flusher that deletes them in batches.
type queueSubscriber struct {
	db     *DB
	cfg    QueueSubscriberConfig
	logger watermill.LoggerAdapter

	mu          sync.Mutex
	closed      bool
	subs        []*queueSubscription
	wg          sync.WaitGroup
	acks        chan int64
	flusherDone chan struct{}
	// flusherRunning is set by the first Subscribe, which starts flushAcks.
	flusherRunning bool
}

// NewQueueSubscriber returns a work-queue subscriber. Any number of
// subscribers, in this process or others sharing the file, may consume the
// same topic; each message is held by at most one of them at a time.
func NewQueueSubscriber(db *DB, cfg QueueSubscriberConfig, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	if db == nil {
		return nil, errors.New("sqlite: nil DB")
	}
	cfg.setDefaults()
	return &queueSubscriber{
		db:          db,
		cfg:         cfg,
		logger:      orNop(logger),
		acks:        make(chan int64, ackBatchMax),
		flusherDone: make(chan struct{}),
	}, nil
}

// Subscribe starts claiming messages of topic. The channel is closed when
// ctx ends or the subscriber is closed. Messages' contexts are canceled then.
func (s *queueSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if topic == "" {
		return nil, errors.New("sqlite: empty topic")
	}
	if err := InitializeQueue(ctx, s.db); err != nil {
		return nil, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("sqlite: queue subscriber is closed")
	}
	if !s.flusherRunning {
		s.flusherRunning = true
		go s.flushAcks()
	}

	subCtx, cancel := context.WithCancel(ctx)
	sub := &queueSubscription{
		s:       s,
		topic:   topic,
		logger:  s.logger.With(watermill.LogFields{"topic": topic}),
		ctx:     subCtx,
		cancel:  cancel,
		out:     make(chan *message.Message),
		held:    make(map[int64]int64),
		freed:   make(chan struct{}, 1),
		nackDue: make(chan struct{}, 1),
		sig:     s.db.notify.get(queueKey(topic)),
	}
	s.subs = append(s.subs, sub)
	s.wg.Add(1)
	go sub.run()
	return sub.out, nil
}

// SubscribeInitialize implements message.SubscribeInitializer.
func (s *queueSubscriber) SubscribeInitialize(string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return InitializeQueue(ctx, s.db)
}

// Close stops claiming, releases the leases of messages not acked yet so
// other subscribers take them at once, flushes pending acks and returns when
// every goroutine of the subscriber has ended.
func (s *queueSubscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := s.subs
	s.subs = nil
	flusher := s.flusherRunning
	s.mu.Unlock()

	for _, sub := range subs {
		sub.cancel()
	}
	s.wg.Wait()

	// Every watcher has ended, so nothing sends acks any more.
	if flusher {
		close(s.acks)
		<-s.flusherDone
	}
	return nil
}

// flushAcks deletes acked rows in batches: one transaction per ackBatchDelay
// or ackBatchMax acks. Losing a batch to a crash only causes redeliveries.
func (s *queueSubscriber) flushAcks() {
	defer close(s.flusherDone)
	batch := make([]int64, 0, ackBatchMax)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false

	flush := func() {
		if armed {
			timer.Stop()
			armed = false
		}
		if len(batch) == 0 {
			return
		}
		if err := s.deleteAcked(batch); err != nil {
			s.logger.Error("Could not delete acked queue messages; they will be redelivered", err,
				watermill.LogFields{"count": len(batch)})
		}
		batch = batch[:0]
	}

	for {
		select {
		case off, ok := <-s.acks:
			if !ok {
				flush()
				return
			}
			batch = append(batch, off)
			if len(batch) >= ackBatchMax {
				flush()
			} else if !armed {
				timer.Reset(ackBatchDelay)
				armed = true
			}
		case <-timer.C:
			armed = false
			flush()
		}
	}
}

func (s *queueSubscriber) deleteAcked(offsets []int64) error {
	args := make([]any, len(offsets))
	for i, o := range offsets {
		args[i] = o
	}
	q := `DELETE FROM ` + queueTable + ` WHERE "offset" IN (` +
		strings.TrimSuffix(strings.Repeat("?,", len(offsets)), ",") + `)`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := s.db.Write.ExecContext(ctx, q, args...)
	return err
}

// queueSubscription is one Subscribe call: a claim loop, a heartbeat and one
// watcher goroutine per outstanding message.
type queueSubscription struct {
	s      *queueSubscriber
	topic  string
	logger watermill.LoggerAdapter
	ctx    context.Context
	cancel context.CancelFunc
	// coalesced is set while a claim waits once for more free slots (claimLoop only).
	coalesced bool
	out       chan *message.Message
	sig       *signal

	mu sync.Mutex
	// held maps the offsets this subscription has claimed and not yet
	// acked or nacked to the deliveries value of the claim (the fence).
	held    map[int64]int64
	nextDue time.Time // earliest redelivery of a message nacked here

	freed    chan struct{} // a held message was acked or nacked
	nackDue  chan struct{} // nextDue moved earlier
	watchers sync.WaitGroup
}

type claimedMsg struct {
	offset     int64
	deliveries int64
	msg        *message.Message
}

func (q *queueSubscription) run() {
	defer q.s.wg.Done()
	defer close(q.out)

	heartbeatDone := make(chan struct{})
	go func() {
		defer close(heartbeatDone)
		q.heartbeat()
	}()

	q.claimLoop()

	<-heartbeatDone
	q.watchers.Wait()
	q.releaseHeld()
}

func (q *queueSubscription) claimLoop() {
	cfg := q.s.cfg
	for q.ctx.Err() == nil {
		q.mu.Lock()
		free := cfg.Concurrency - len(q.held)
		q.mu.Unlock()

		if free <= 0 {
			select {
			case <-q.freed:
			case <-q.ctx.Done():
			}
			continue
		}
		if free < cfg.Concurrency/4 && !q.coalesced {
			// A few slots are free while many are busy: give other handlers a moment to finish so one
			// claim statement fetches several messages. Worth it for sub-second work; invisible for
			// minute-long work.
			q.coalesced = true
			select {
			case <-time.After(claimCoalesce):
			case <-q.ctx.Done():
			}
			continue
		}
		q.coalesced = false

		// Taken before the claim so that a publish committed after the
		// claim's read is not missed by the wait below.
		seen, _ := q.sig.snapshot()
		msgs, err := q.claim(free)
		if err != nil {
			q.logger.Error("Could not claim queue messages", err, nil)
			select {
			case <-time.After(queueRetryInterval):
			case <-q.ctx.Done():
			}
			continue
		}
		for _, m := range msgs {
			select {
			case q.out <- m.msg:
				q.watch(m)
			case <-q.ctx.Done():
				// Still in held: released on the way out.
				return
			}
		}
		if len(msgs) == free {
			continue // the queue may hold more
		}
		q.sig.wait(seen, q.idleWait(), q.ctx.Done(), q.nackDue)
	}
}

// idleWait is the poll interval, shortened so that a message nacked by this
// subscription is picked up when its NackDelay ends.
func (q *queueSubscription) idleWait() time.Duration {
	d := q.s.cfg.PollInterval
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.nextDue.IsZero() {
		until := time.Until(q.nextDue)
		if until <= 0 {
			q.nextDue = time.Time{}
			until = time.Millisecond
		}
		d = min(d, until)
	}
	return d
}

// claim leases up to limit available messages in one statement.
func (q *queueSubscription) claim(limit int) ([]claimedMsg, error) {
	now := time.Now()
	leaseUntil := now.Add(q.s.cfg.Lease).UnixMilli()
	// Not q.ctx: a statement interrupted while its RETURNING rows are read
	// would leave leases this subscription does not know it holds.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := q.s.db.Write.QueryContext(ctx, `UPDATE `+queueTable+`
		SET available_at = ?, deliveries = deliveries + 1
		WHERE "offset" IN (
			SELECT "offset" FROM `+queueTable+`
			WHERE topic = ? AND available_at <= ?
			ORDER BY available_at, "offset" LIMIT ?)
		RETURNING "offset", uuid, payload, metadata, deliveries`,
		leaseUntil, q.topic, now.UnixMilli(), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()

	var msgs []claimedMsg
	var decodeErr error
	for rows.Next() {
		var (
			m        claimedMsg
			uuid     string
			payload  []byte
			metadata sql.NullString
		)
		if err := rows.Scan(&m.offset, &uuid, &payload, &metadata, &m.deliveries); err != nil {
			return nil, err
		}
		m.msg = message.NewMessage(uuid, payload)
		if metadata.Valid && metadata.String != "" {
			if err := json.Unmarshal([]byte(metadata.String), &m.msg.Metadata); err != nil {
				// Deliver it without metadata: with no message name, the router moves it to the poison
				// topic, where it can be inspected, instead of it coming back forever.
				decodeErr = errors.Join(decodeErr, fmt.Errorf("message %s (offset %d): metadata: %w", uuid, m.offset, err))
				m.msg.Metadata = message.Metadata{MetadataErrorKey: err.Error()}
			}
		}
		m.msg.Metadata.Set(DeliveriesMetadataKey, strconv.FormatInt(m.deliveries, 10))
		m.msg.SetContext(q.ctx)
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if decodeErr != nil {
		q.logger.Error("Queue messages with undecodable metadata delivered without it", decodeErr, nil)
	}
	// RETURNING order is unspecified.
	slices.SortFunc(msgs, func(a, b claimedMsg) int { return cmp.Compare(a.offset, b.offset) })

	q.mu.Lock()
	for _, m := range msgs {
		q.held[m.offset] = m.deliveries
	}
	q.mu.Unlock()
	return msgs, nil
}

// watch waits for the outcome of one delivered message.
func (q *queueSubscription) watch(m claimedMsg) {
	q.watchers.Add(1)
	go func() {
		defer q.watchers.Done()
		select {
		case <-m.msg.Acked():
			q.acked(m)
		case <-m.msg.Nacked():
			q.nacked(m)
		case <-q.ctx.Done():
			// An ack that raced with the shutdown still counts.
			select {
			case <-m.msg.Acked():
				q.acked(m)
			default:
			}
		}
	}()
}

func (q *queueSubscription) acked(m claimedMsg) {
	q.mu.Lock()
	delete(q.held, m.offset)
	q.mu.Unlock()
	q.s.acks <- m.offset
	q.signalFreed()
}

func (q *queueSubscription) nacked(m claimedMsg) {
	due := time.Now().Add(q.s.cfg.NackDelay)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := q.s.db.Write.ExecContext(ctx,
		`UPDATE `+queueTable+` SET available_at = ? WHERE "offset" = ? AND deliveries = ?`,
		due.UnixMilli(), m.offset, m.deliveries)
	if err != nil {
		// Stop holding it: the heartbeat no longer extends its lease, so it is redelivered once the
		// lease runs out, and its worker slot is free again meanwhile.
		q.logger.Error("Could not nack queue message; it returns when its lease expires", err, watermill.LogFields{"msg_uuid": m.msg.UUID})
		q.mu.Lock()
		delete(q.held, m.offset)
		q.mu.Unlock()
		q.signalFreed()
		return
	}
	q.mu.Lock()
	delete(q.held, m.offset)
	earlier := q.nextDue.IsZero() || due.Before(q.nextDue)
	if earlier {
		q.nextDue = due
	}
	q.mu.Unlock()
	q.signalFreed()
	if earlier {
		select {
		case q.nackDue <- struct{}{}:
		default:
		}
	}
}

func (q *queueSubscription) signalFreed() {
	select {
	case q.freed <- struct{}{}:
	default:
	}
}

// heartbeat extends the leases of held messages every Lease/3.
func (q *queueSubscription) heartbeat() {
	t := time.NewTicker(max(q.s.cfg.Lease/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-q.ctx.Done():
			return
		case <-t.C:
		}
		held := q.snapshotHeld()
		if len(held) == 0 {
			continue
		}
		until := time.Now().Add(q.s.cfg.Lease).UnixMilli()
		lost, err := q.updateHeld(held, until)
		if err != nil {
			q.logger.Error("Could not extend queue leases", err, watermill.LogFields{"count": len(held)})
		} else if lost > 0 {
			q.logger.Info("Queue leases lost to another subscriber", watermill.LogFields{"count": lost})
		}
	}
}

// releaseHeld makes every message still held available at once, so a
// subscriber that stops does not delay its messages by a whole lease.
func (q *queueSubscription) releaseHeld() {
	held := q.snapshotHeld()
	if len(held) == 0 {
		return
	}
	if _, err := q.updateHeld(held, time.Now().UnixMilli()); err != nil {
		q.logger.Error("Could not release queue leases; they will expire", err, watermill.LogFields{"count": len(held)})
		return
	}
	q.mu.Lock()
	clear(q.held)
	q.mu.Unlock()
	q.s.db.notify.Notify(queueKey(q.topic))
}

func (q *queueSubscription) snapshotHeld() map[int64]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.held) == 0 {
		return nil
	}
	c := make(map[int64]int64, len(q.held))
	for k, v := range q.held {
		c[k] = v
	}
	return c
}

// updateHeld sets available_at of the given rows whose deliveries still
// match, and reports how many no longer did (or were gone).
func (q *queueSubscription) updateHeld(held map[int64]int64, availableAt int64) (lost int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = q.s.db.InTx(ctx, func(tx *HookTx) error {
		stmt, err := tx.SQL().PrepareContext(ctx,
			`UPDATE `+queueTable+` SET available_at = ? WHERE "offset" = ? AND deliveries = ?`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for off, deliveries := range held {
			res, err := stmt.ExecContext(ctx, availableAt, off, deliveries)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				lost++
			}
		}
		return nil
	})
	return lost, err
}
