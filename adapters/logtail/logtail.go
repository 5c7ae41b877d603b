// Package logtail follows the end of an SQL event log table (SQLite, PostgreSQL, MySQL) without a
// consumer group: it starts at the newest message, keeps its position in memory only, and never writes.
// Live views use it to learn which jobs changed. watermill-sql has no such mode — a new consumer group
// replays the whole table and stores an offsets row forever — hence this small poller.
//
// On PostgreSQL the tail follows watermill-sql's own order, (transaction id, offset) below the oldest
// running transaction, through the table's primary key: offsets are not commit order there. Delivery is
// still best effort (nothing is stored, a restart starts at the end): consumers must treat messages as
// hints and have a fallback (the live hub re-reads watched jobs periodically).
package logtail

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/sqlite"
)

// Dialect describes one server's SQL for a topic's table.
type Dialect struct {
	// Table returns the quoted messages table of a topic.
	Table func(topic string) string
	// Offset is the quoted offset column.
	Offset string
	// byTransaction: rows are read in (transaction_id, offset) order below the oldest running
	// transaction, as watermill-sql's PostgreSQL schema stores and reads them.
	byTransaction bool
}

// Dialects of the tables watermill-sql (PostgreSQL, MySQL) and jobmill's SQLite log create.
var (
	Postgres = Dialect{Table: func(t string) string { return `"watermill_` + t + `"` }, Offset: `"offset"`, byTransaction: true}
	MySQL    = Dialect{Table: func(t string) string { return "`watermill_" + t + "`" }, Offset: "`offset`"}
	SQLite   = Dialect{Table: sqlite.LogSchema{}.MessagesTable, Offset: `"offset"`}
)

// position is the last message read: its offset, and on PostgreSQL its transaction id (as text, xid8).
type position struct {
	tx     string
	offset int64
}

// queries returns the query for the newest position and the one for the page after a position.
func (d Dialect) queries(table string, batch int) (end, next string) {
	if d.byTransaction {
		visible := `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`
		// The end is the newest row, visible or not: a message that commits after the tail started may
		// be missed, which hints allow; one committed before it started is never delivered.
		return `SELECT transaction_id::text AS tx, "offset" FROM ` + table +
				` ORDER BY transaction_id DESC, "offset" DESC LIMIT 1`,
			`SELECT "offset", uuid, payload, metadata, transaction_id::text AS tx FROM ` + table +
				` WHERE (transaction_id, "offset") > ($1::xid8, $2) AND ` + visible +
				` ORDER BY transaction_id, "offset" LIMIT ` + fmt.Sprint(batch)
	}
	return `SELECT '0', COALESCE(MAX(` + d.Offset + `), 0) FROM ` + table,
		`SELECT ` + d.Offset + `, uuid, payload, metadata, '0' FROM ` + table + ` WHERE ` + d.Offset + ` > ? ORDER BY ` +
			d.Offset + ` LIMIT ` + fmt.Sprint(batch)
}

func (d Dialect) args(p position) []any {
	if d.byTransaction {
		return []any{p.tx, p.offset}
	}
	return []any{p.offset}
}

// Config configures a Subscriber.
type Config struct {
	DB      *sql.DB
	Dialect Dialect
	// Poll is the pause between reads when the tail is idle (default 20ms): one cheap indexed query.
	Poll time.Duration
	// Batch is the most messages read per query (default 500).
	Batch int
}

// Subscriber tails log tables. Each Subscribe starts at the table's newest message.
type Subscriber struct {
	cfg    Config
	logger watermill.LoggerAdapter

	mu      sync.Mutex
	closed  bool
	closing chan struct{}
	wg      sync.WaitGroup
}

// NewSubscriber refuses a nil database.
func NewSubscriber(cfg Config, logger watermill.LoggerAdapter) (*Subscriber, error) {
	if cfg.DB == nil || cfg.Dialect.Table == nil {
		return nil, errors.New("logtail: database and dialect are required")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 20 * time.Millisecond
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	return &Subscriber{cfg: cfg, logger: logger, closing: make(chan struct{})}, nil
}

// Subscribe follows topic from its current end. Messages need no ack to move on (nothing is stored),
// but each is delivered only after the previous one was acked or nacked, as watermill subscribers do.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("logtail: subscriber closed")
	}
	d := s.cfg.Dialect
	end, next := d.queries(d.Table(topic), s.cfg.Batch)
	last := position{tx: "0"}
	err := s.cfg.DB.QueryRowContext(ctx, end).Scan(&last.tx, &last.offset)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("logtail: find the end of %s: %w", topic, err)
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		s.follow(ctx, topic, next, last, out)
	}()
	return out, nil
}

func (s *Subscriber) follow(ctx context.Context, topic, query string, last position, out chan<- *message.Message) {
	wait := time.NewTimer(0)
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-wait.C:
		}
		n, err := s.read(ctx, query, &last, out)
		if err != nil && ctx.Err() == nil && !s.isClosed() {
			s.logger.Error("logtail: reading the log failed; retrying", err, watermill.LogFields{"topic": topic})
		}
		if n == s.cfg.Batch {
			wait.Reset(0)
		} else if err != nil {
			wait.Reset(time.Second)
		} else {
			wait.Reset(s.cfg.Poll)
		}
	}
}

type row struct {
	at       position
	uuid     string
	payload  []byte
	metadata []byte
}

func (s *Subscriber) read(ctx context.Context, query string, last *position, out chan<- *message.Message) (int, error) {
	rows, err := s.cfg.DB.QueryContext(ctx, query, s.cfg.Dialect.args(*last)...)
	if err != nil {
		return 0, err
	}
	// Read the whole page before delivering: a slow receiver must not hold a read transaction open.
	var page []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.at.offset, &r.uuid, &r.payload, &r.metadata, &r.at.tx); err != nil {
			rows.Close()
			return 0, err
		}
		page = append(page, r)
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for _, r := range page {
		*last = r.at
		msg := message.NewMessage(r.uuid, r.payload)
		if len(r.metadata) > 0 {
			// Metadata that is not JSON is left empty: the message is still a hint with its payload.
			_ = json.Unmarshal(r.metadata, &msg.Metadata)
		}
		msg.SetContext(ctx)
		select {
		case out <- msg:
		case <-ctx.Done():
			return 0, nil
		case <-s.closing:
			return 0, nil
		}
		select {
		case <-msg.Acked():
		case <-msg.Nacked():
		case <-ctx.Done():
			return 0, nil
		case <-s.closing:
			return 0, nil
		}
	}
	return len(page), nil
}

func (s *Subscriber) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops every subscription and waits for them.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
