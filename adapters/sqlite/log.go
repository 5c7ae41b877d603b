package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/message"
)

// The event log is watermill-sql's offset-based transport with SQLite dialect
// adapters: one table per topic, one offsets row per consumer group, every
// consumer group reads every message in order.
//
// Serialisation comes from SQLite itself: the subscriber's transaction is
// BEGIN IMMEDIATE, so it holds the database write lock from before it reads
// the consumer group's offset until it stores the new one. Two subscribers
// of the same group (in this process or another) can never read the same
// range, and no row lock or "consumed" marker is needed.
//
// The price is that a subscriber holds the write lock, the only write
// connection of its DB, while its handlers run (up to SubscribeBatchSize
// messages per transaction, and ResendInterval sleeps after a Nack). Keep log
// handlers short and do their writes through the message's transaction.

const (
	defaultLogBatchSize      = 100
	defaultLogPollInterval   = 5 * time.Millisecond
	defaultLogResendInterval = 100 * time.Millisecond
	defaultLogRetryInterval  = 100 * time.Millisecond

	// logInsertChunk bounds the rows of one INSERT: SQLite accepts at most
	// 32766 bound parameters per statement and each message takes three.
	logInsertChunk = 1000
)

// LogSchema is the watermill-sql SchemaAdapter for SQLite.
type LogSchema struct {
	// SubscribeBatchSize is the number of messages read per subscriber
	// transaction. Default 100.
	SubscribeBatchSize int
}

var _ wsql.SchemaAdapter = LogSchema{}

// MessagesTable is the quoted table name of topic. Topic names may contain
// dots, hence the quotes; watermill-sql rejects names containing quotes.
func (s LogSchema) MessagesTable(topic string) string {
	return `"watermill_` + topic + `"`
}

// SchemaInitializingQueries implements wsql.SchemaAdapter.
func (s LogSchema) SchemaInitializingQueries(params wsql.SchemaInitializingQueriesParams) ([]wsql.Query, error) {
	// AUTOINCREMENT: offsets are never reused, even after rows are deleted,
	// so a stored consumer offset can never point past a new message.
	return []wsql.Query{{Query: `CREATE TABLE IF NOT EXISTS ` + s.MessagesTable(params.Topic) + ` (
		"offset" INTEGER PRIMARY KEY AUTOINCREMENT,
		uuid TEXT NOT NULL,
		created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
		payload BLOB,
		metadata TEXT
	)`}}, nil
}

// InsertQuery implements wsql.SchemaAdapter.
func (s LogSchema) InsertQuery(params wsql.InsertQueryParams) (wsql.Query, error) {
	if len(params.Msgs) == 0 {
		return wsql.Query{}, errors.New("no messages to insert")
	}
	args := make([]any, 0, 3*len(params.Msgs))
	for _, msg := range params.Msgs {
		md, err := marshalMetadata(msg)
		if err != nil {
			return wsql.Query{}, err
		}
		args = append(args, msg.UUID, []byte(msg.Payload), md)
	}
	q := `INSERT INTO ` + s.MessagesTable(params.Topic) + ` (uuid, payload, metadata) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?,?,?),", len(params.Msgs)), ",")
	return wsql.Query{Query: q, Args: args}, nil
}

// SelectQuery implements wsql.SchemaAdapter.
func (s LogSchema) SelectQuery(params wsql.SelectQueryParams) (wsql.Query, error) {
	next, err := params.OffsetsAdapter.NextOffsetQuery(wsql.NextOffsetQueryParams{
		Topic:         params.Topic,
		ConsumerGroup: params.ConsumerGroup,
	})
	if err != nil {
		return wsql.Query{}, err
	}
	q := `SELECT "offset", uuid, payload, metadata FROM ` + s.MessagesTable(params.Topic) +
		` WHERE "offset" > (` + next.Query + `) ORDER BY "offset" LIMIT ` + fmt.Sprint(s.batchSize())
	return wsql.Query{Query: q, Args: next.Args}, nil
}

// UnmarshalMessage implements wsql.SchemaAdapter.
func (s LogSchema) UnmarshalMessage(params wsql.UnmarshalMessageParams) (wsql.Row, error) {
	var (
		r        wsql.Row
		uuid     string
		metadata sql.NullString
	)
	if err := params.Row.Scan(&r.Offset, &uuid, &r.Payload, &metadata); err != nil {
		return wsql.Row{}, fmt.Errorf("could not scan message row: %w", err)
	}
	r.UUID = []byte(uuid)
	msg := message.NewMessage(uuid, r.Payload)
	if metadata.Valid && metadata.String != "" {
		r.Metadata = []byte(metadata.String)
		if err := json.Unmarshal(r.Metadata, &msg.Metadata); err != nil {
			return wsql.Row{}, fmt.Errorf("could not unmarshal metadata of message %s: %w", uuid, err)
		}
	}
	r.Msg = msg
	return r, nil
}

// SubscribeIsolationLevel implements wsql.SchemaAdapter. SQLite transactions
// are always serializable; the driver ignores the level.
func (s LogSchema) SubscribeIsolationLevel() sql.IsolationLevel { return sql.LevelDefault }

func (s LogSchema) batchSize() int {
	if s.SubscribeBatchSize <= 0 {
		return defaultLogBatchSize
	}
	return s.SubscribeBatchSize
}

// LogOffsets is the watermill-sql OffsetsAdapter for SQLite: one row per
// consumer group holding the last acked offset.
type LogOffsets struct{}

var _ wsql.OffsetsAdapter = LogOffsets{}

// OffsetsTable is the quoted offsets table name of topic.
func (LogOffsets) OffsetsTable(topic string) string {
	return `"watermill_offsets_` + topic + `"`
}

// SchemaInitializingQueries implements wsql.OffsetsAdapter.
func (a LogOffsets) SchemaInitializingQueries(params wsql.OffsetsSchemaInitializingQueriesParams) ([]wsql.Query, error) {
	return []wsql.Query{{Query: `CREATE TABLE IF NOT EXISTS ` + a.OffsetsTable(params.Topic) + ` (
		consumer_group TEXT NOT NULL PRIMARY KEY,
		offset_acked INTEGER,
		offset_consumed INTEGER NOT NULL
	)`}}, nil
}

// AckMessageQuery implements wsql.OffsetsAdapter.
func (a LogOffsets) AckMessageQuery(params wsql.AckMessageQueryParams) (wsql.Query, error) {
	q := `INSERT INTO ` + a.OffsetsTable(params.Topic) + ` (consumer_group, offset_acked, offset_consumed)
		VALUES (?, ?, ?)
		ON CONFLICT(consumer_group) DO UPDATE SET offset_acked = excluded.offset_acked, offset_consumed = excluded.offset_consumed`
	return wsql.Query{Query: q, Args: []any{params.ConsumerGroup, params.LastRow.Offset, params.LastRow.Offset}}, nil
}

// NextOffsetQuery implements wsql.OffsetsAdapter.
func (a LogOffsets) NextOffsetQuery(params wsql.NextOffsetQueryParams) (wsql.Query, error) {
	return wsql.Query{
		Query: `SELECT COALESCE((SELECT offset_acked FROM ` + a.OffsetsTable(params.Topic) + ` WHERE consumer_group = ?), 0)`,
		Args:  []any{params.ConsumerGroup},
	}, nil
}

// ConsumedMessageQuery implements wsql.OffsetsAdapter. It is empty: the
// subscriber's BEGIN IMMEDIATE already excludes concurrent readers of the
// group, so there is no race to detect.
func (LogOffsets) ConsumedMessageQuery(wsql.ConsumedMessageQueryParams) (wsql.Query, error) {
	return wsql.Query{}, nil
}

// BeforeSubscribingQueries implements wsql.OffsetsAdapter.
func (LogOffsets) BeforeSubscribingQueries(wsql.BeforeSubscribingQueriesParams) ([]wsql.Query, error) {
	return nil, nil
}

// InitializeLogTopics creates the message and offsets tables of topics.
func InitializeLogTopics(ctx context.Context, db *DB, topics ...string) error {
	return db.InTx(ctx, func(tx *HookTx) error {
		for _, topic := range topics {
			if err := initLogTopic(ctx, tx, topic); err != nil {
				return err
			}
		}
		return nil
	})
}

func initLogTopic(ctx context.Context, tx *HookTx, topic string) error {
	if _, ok := tx.db.logTopics.Load(topic); ok {
		return nil
	}
	if err := validateTopic(topic); err != nil {
		return err
	}
	q1, _ := LogSchema{}.SchemaInitializingQueries(wsql.SchemaInitializingQueriesParams{Topic: topic})
	q2, _ := LogOffsets{}.SchemaInitializingQueries(wsql.OffsetsSchemaInitializingQueriesParams{Topic: topic})
	for _, q := range append(q1, q2...) {
		if _, err := tx.ExecContext(ctx, q.Query, q.Args...); err != nil {
			return fmt.Errorf("sqlite: create log tables of topic %s: %w", topic, err)
		}
	}
	// SQLite DDL is transactional: the tables exist only once this commits.
	tx.AfterCommit(func() { tx.db.logTopics.Store(topic, struct{}{}) })
	return nil
}

// logPublisher inserts through watermill-sql's Publisher and wakes this
// process's subscribers of the topic after the commit.
type logPublisher struct {
	db     *DB
	tx     *HookTx // nil: each Publish runs in its own transaction
	logger watermill.LoggerAdapter
	closed atomic.Bool
}

// NewLogPublisher returns a publisher of event-log messages. Each Publish
// call is one transaction, so a multi-message Publish is atomic.
//
// If the first message's context carries an open transaction of db (it was
// derived from the context of a message consumed by a log subscriber), the
// insert joins that transaction: it commits with the consumer offset, and
// it does not deadlock waiting for the write connection that transaction
// holds. Messages returned by a Watermill router handler have their own
// context; set it from the consumed message's context to get this.
func NewLogPublisher(db *DB, logger watermill.LoggerAdapter) (message.Publisher, error) {
	if db == nil {
		return nil, errors.New("sqlite: nil DB")
	}
	return &logPublisher{db: db, logger: orNop(logger)}, nil
}

// NewTxLogPublisher returns a publisher that inserts inside tx (transactional
// outbox). Subscribers are woken after tx commits; nothing is published if it
// rolls back. It must not be used after tx ends.
func NewTxLogPublisher(tx *HookTx, logger watermill.LoggerAdapter) (message.Publisher, error) {
	if tx == nil {
		return nil, errors.New("sqlite: nil transaction")
	}
	return &logPublisher{db: tx.db, tx: tx, logger: orNop(logger)}, nil
}

func (p *logPublisher) Publish(topic string, messages ...*message.Message) error {
	if p.closed.Load() {
		return wsql.ErrPublisherClosed
	}
	if len(messages) == 0 {
		return nil
	}
	if p.tx != nil {
		return p.publishIn(messages[0].Context(), p.tx, topic, messages)
	}
	ctx := messages[0].Context()
	return p.db.InTx(ctx, func(tx *HookTx) error {
		return p.publishIn(ctx, tx, topic, messages)
	})
}

func (p *logPublisher) publishIn(ctx context.Context, tx *HookTx, topic string, messages []*message.Message) error {
	if err := initLogTopic(ctx, tx, topic); err != nil {
		return err
	}
	pub, err := wsql.NewPublisher(tx, wsql.PublisherConfig{SchemaAdapter: LogSchema{}}, p.logger)
	if err != nil {
		return err
	}
	for len(messages) > 0 {
		n := min(len(messages), logInsertChunk)
		if err := pub.Publish(topic, messages[:n]...); err != nil {
			return fmt.Errorf("sqlite: publish to %s: %w", topic, err)
		}
		messages = messages[n:]
	}
	db := p.db
	tx.AfterCommit(func() { db.notify.Notify(logKey(topic)) })
	return nil
}

func (p *logPublisher) Close() error {
	p.closed.Store(true)
	return nil
}

// LogSubscriberConfig configures NewLogSubscriber.
type LogSubscriberConfig struct {
	// PollInterval is the longest an idle subscriber waits before looking for
	// messages written by other processes. Publishers of the same DB wake it
	// at once. Default 5ms.
	PollInterval time.Duration
	// ResendInterval is the pause before a Nacked message is delivered again.
	// The subscriber's transaction, and so the DB's write lock, stays held
	// during the pause. Default 100ms.
	ResendInterval time.Duration
	// RetryInterval is the pause after a failed query. Default 100ms.
	RetryInterval time.Duration
	// AckDeadline bounds how long a message may stay unacked before it is
	// treated as nacked. Nil means watermill-sql's default, 30s; 0 disables it.
	AckDeadline *time.Duration
	// BatchSize is the number of messages read per transaction. Default 100.
	BatchSize int
}

func (c *LogSubscriberConfig) setDefaults() {
	if c.PollInterval <= 0 {
		c.PollInterval = defaultLogPollInterval
	}
	if c.ResendInterval <= 0 {
		c.ResendInterval = defaultLogResendInterval
	}
	if c.RetryInterval <= 0 {
		c.RetryInterval = defaultLogRetryInterval
	}
	if c.BatchSize <= 0 {
		c.BatchSize = defaultLogBatchSize
	}
}

// logSubscriber runs one watermill-sql Subscriber per Subscribe call, each
// with a BackoffManager bound to its topic so that it can sleep on the DB's
// notifier rather than on a plain timer.
type logSubscriber struct {
	db     *DB
	group  string
	cfg    LogSubscriberConfig
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	subs    []*logSubscription
	relays  sync.WaitGroup
}

// logSubscription is one Subscribe call. Messages pass through a relay so the
// subscriber can tell when watermill-sql has taken in the last Ack: its
// delivery loop selects on "acked" and "closing" together, so closing right
// after an Ack could otherwise drop it, and the message would be redelivered
// although its handler's writes were committed with the batch.
type logSubscription struct {
	inner *wsql.Subscriber

	mu   sync.Mutex
	last *message.Message // last message handed to the caller
	// moved is closed once watermill-sql has gone past last: it delivered
	// the next message or finished its batch transaction.
	moved chan struct{}
}

func (s *logSubscription) progress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.moved:
	default:
		close(s.moved)
	}
}

func (s *logSubscription) delivered(msg *message.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.moved:
	default:
		close(s.moved)
	}
	s.last = msg
	s.moved = make(chan struct{})
}

// settle waits, briefly, for an already acked last message to be recorded.
func (s *logSubscription) settle(timeout time.Duration) {
	s.mu.Lock()
	last, moved := s.last, s.moved
	s.mu.Unlock()
	if last == nil {
		return
	}
	select {
	case <-last.Acked():
	default:
		return // unacked: it will be redelivered anyway
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-moved:
	case <-t.C:
	}
}

// NewLogSubscriber returns a subscriber reading topics of the event log as
// consumerGroup: every consumer group receives every message, in offset
// order, and commits its offset in the transaction that delivered the
// messages (wsql.TxFromContext / TxFromContext on msg.Context()).
// Subscribe creates the topic's tables if needed.
func NewLogSubscriber(db *DB, consumerGroup string, cfg LogSubscriberConfig, logger watermill.LoggerAdapter) (message.Subscriber, error) {
	if db == nil {
		return nil, errors.New("sqlite: nil DB")
	}
	cfg.setDefaults()
	if cfg.AckDeadline != nil && *cfg.AckDeadline < 0 {
		return nil, errors.New("sqlite: negative AckDeadline")
	}
	return &logSubscriber{
		db:      db,
		group:   consumerGroup,
		cfg:     cfg,
		logger:  orNop(logger),
		closing: make(chan struct{}),
	}, nil
}

func (s *logSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, wsql.ErrSubscriberClosed
	}
	if err := InitializeLogTopics(ctx, s.db, topic); err != nil {
		return nil, err
	}

	ls := &logSubscription{moved: make(chan struct{})}
	sig := s.db.notify.get(logKey(topic))
	seen, _ := sig.snapshot()
	backoff := &wakeBackoff{
		sub:     ls,
		sig:     sig,
		seen:    seen,
		poll:    s.cfg.PollInterval,
		retry:   s.cfg.RetryInterval,
		closing: s.closing,
		ctxDone: ctx.Done(),
		pending: pendingLogQuery(s.db, topic, s.group),
	}
	sub, err := wsql.NewSubscriber(s.db.Beginner(), wsql.SubscriberConfig{
		ConsumerGroup:  s.group,
		AckDeadline:    s.cfg.AckDeadline,
		PollInterval:   s.cfg.PollInterval,
		ResendInterval: s.cfg.ResendInterval,
		RetryInterval:  s.cfg.RetryInterval,
		BackoffManager: backoff,
		SchemaAdapter:  LogSchema{SubscribeBatchSize: s.cfg.BatchSize},
		OffsetsAdapter: LogOffsets{},
	}, s.logger)
	if err != nil {
		return nil, fmt.Errorf("sqlite: log subscriber: %w", err)
	}
	in, err := sub.Subscribe(ctx, topic)
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("sqlite: subscribe to %s: %w", topic, err)
	}
	ls.inner = sub
	s.subs = append(s.subs, ls)

	out := make(chan *message.Message)
	s.relays.Add(1)
	go func() {
		defer s.relays.Done()
		defer close(out)
		for msg := range in {
			ls.delivered(msg)
			select {
			case out <- msg:
			case <-s.closing:
				// Dropped unacked; drain until watermill-sql stops.
			case <-ctx.Done():
			}
		}
	}()
	return out, nil
}

// SubscribeInitialize implements message.SubscribeInitializer.
func (s *logSubscriber) SubscribeInitialize(topic string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return InitializeLogTopics(ctx, s.db, topic)
}

// Close stops every subscription and waits for them. A batch being
// delivered commits the offset of its last acked message.
func (s *logSubscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()

	for _, sub := range subs {
		sub.settle(time.Second)
	}
	close(s.closing)
	var errs []error
	for _, sub := range subs {
		errs = append(errs, sub.inner.Close())
	}
	s.relays.Wait()
	return errors.Join(errs...)
}

// wakeBackoff is the BackoffManager of one log subscription. watermill-sql
// calls HandleError synchronously between queries, so blocking in it is how
// an idle subscriber waits; it returns as soon as a local publisher commits
// to the topic or the subscription ends.
type wakeBackoff struct {
	sub     *logSubscription
	sig     *signal
	seen    uint64
	poll    time.Duration
	retry   time.Duration
	closing <-chan struct{}
	ctxDone <-chan struct{}
	// pending reports, on a read connection, whether the group has unread
	// messages. Idle polling uses it instead of taking the write lock for a
	// transaction that would find nothing.
	pending func() (bool, error)
}

func (b *wakeBackoff) done() bool {
	select {
	case <-b.closing:
		return true
	case <-b.ctxDone:
		return true
	default:
		return false
	}
}

func (b *wakeBackoff) HandleError(logger watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	// The batch transaction has ended: any Ack it saw is settled.
	b.sub.progress()
	if err != nil {
		if b.done() {
			return 0
		}
		logger.Error("Error querying log messages", err, watermill.LogFields{"wait_time": b.retry})
		b.seen, _ = b.sig.snapshot()
		return b.retry
	}
	if !noMsg {
		b.seen, _ = b.sig.snapshot()
		return 0
	}
	for {
		v := b.sig.wait(b.seen, b.poll, b.closing, b.ctxDone)
		woken := v != b.seen
		b.seen = v
		if woken || b.done() {
			return 0
		}
		if ok, err := b.pending(); err != nil || ok {
			return 0
		}
	}
}

func pendingLogQuery(db *DB, topic, group string) func() (bool, error) {
	q := `SELECT EXISTS (SELECT 1 FROM ` + LogSchema{}.MessagesTable(topic) + ` WHERE "offset" > ` +
		`COALESCE((SELECT offset_acked FROM ` + LogOffsets{}.OffsetsTable(topic) + ` WHERE consumer_group = ?), 0))`
	return func() (bool, error) {
		var ok bool
		err := db.Read.QueryRow(q, group).Scan(&ok)
		return ok, err
	}
}

func marshalMetadata(msg *message.Message) (string, error) {
	if len(msg.Metadata) == 0 {
		return "", nil
	}
	b, err := json.Marshal(msg.Metadata)
	if err != nil {
		return "", fmt.Errorf("could not marshal metadata of message %s: %w", msg.UUID, err)
	}
	return string(b), nil
}

// validateTopic applies watermill-sql's topic rule (letters, digits and
// -$:._), which also keeps quoted table names injection-free.
func validateTopic(topic string) error {
	if topic == "" {
		return errors.New("sqlite: empty topic")
	}
	for _, r := range topic {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("-$:._", r):
		default:
			return fmt.Errorf("sqlite: topic %q: %w", topic, wsql.ErrInvalidTopicName)
		}
	}
	return nil
}

func orNop(l watermill.LoggerAdapter) watermill.LoggerAdapter {
	if l == nil {
		return watermill.NopLogger{}
	}
	return l
}
