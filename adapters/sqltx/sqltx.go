// Package sqltx gives server databases (PostgreSQL, MySQL) a transaction that watermill-sql's subscriber
// can run on and that the job store can join: a consumed event's offset, the state change it causes and
// the events it emits then commit together, once per batch of events instead of once per event.
package sqltx

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
)

// Tx is a transaction with callbacks around its commit. It implements watermill-sql's Tx.
type Tx struct {
	*sql.Tx
	db *sql.DB

	mu     sync.Mutex
	open   bool
	before []func() error
	after  []func()
	values map[any]any
}

var _ wsql.Tx = (*Tx)(nil)

// ExecContext implements wsql.ContextExecutor.
func (t *Tx) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	return t.Tx.ExecContext(ctx, query, args...)
}

// QueryContext implements wsql.ContextExecutor.
func (t *Tx) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return t.Tx.QueryContext(ctx, query, args...)
}

// BeforeCommit registers fn to run just before the commit; its error rolls the transaction back.
func (t *Tx) BeforeCommit(fn func() error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.before = append(t.before, fn)
}

// AfterCommit registers fn to run after a successful commit, never after a rollback.
func (t *Tx) AfterCommit(fn func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.after = append(t.after, fn)
}

// Value returns per-transaction state stored with SetValue.
func (t *Tx) Value(key any) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.values[key]
}

// SetValue stores per-transaction state.
func (t *Tx) SetValue(key, v any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.values == nil {
		t.values = map[any]any{}
	}
	t.values[key] = v
}

// Commit runs the BeforeCommit callbacks, commits, then runs the AfterCommit callbacks.
func (t *Tx) Commit() error {
	t.mu.Lock()
	before, after := t.before, t.after
	t.before, t.after, t.values, t.open = nil, nil, nil, false
	t.mu.Unlock()
	for _, fn := range before {
		if err := fn(); err != nil {
			_ = t.Tx.Rollback()
			return fmt.Errorf("before commit: %w", err)
		}
	}
	if err := t.Tx.Commit(); err != nil {
		return err
	}
	for _, fn := range after {
		fn()
	}
	return nil
}

// Rollback aborts the transaction and drops its callbacks.
func (t *Tx) Rollback() error {
	t.mu.Lock()
	t.before, t.after, t.values, t.open = nil, nil, nil, false
	t.mu.Unlock()
	return t.Tx.Rollback()
}

// InSavepoint runs fn under a savepoint: an error undoes fn's writes and the callbacks it registered,
// and leaves the transaction usable.
func (t *Tx) InSavepoint(ctx context.Context, fn func() error) error {
	sp := t.LazySavepoint()
	if err := sp.Begin(ctx); err != nil {
		return err
	}
	return sp.End(ctx, fn())
}

// Savepoint is a savepoint taken only when work first needs one: work served from memory then costs no
// round trip, and work that reads or writes the database can still fail without aborting the batch.
type Savepoint struct {
	tx                    *Tx
	begun                 bool
	beforeMark, afterMark int
}

// LazySavepoint returns a savepoint that is not taken yet; call Begin before the first statement that
// must be undoable, and End once.
func (t *Tx) LazySavepoint() *Savepoint {
	t.mu.Lock()
	defer t.mu.Unlock()
	return &Savepoint{tx: t, beforeMark: len(t.before), afterMark: len(t.after)}
}

// Begin takes the savepoint if it is not taken yet.
func (s *Savepoint) Begin(ctx context.Context) error {
	if s.begun {
		return nil
	}
	if _, err := s.tx.Tx.ExecContext(ctx, "SAVEPOINT jobmill_sp"); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	s.begun = true
	return nil
}

// End releases the savepoint when err is nil, and otherwise undoes the statements run since Begin and
// the callbacks registered since LazySavepoint. It returns err, joined with any failure to undo.
func (s *Savepoint) End(ctx context.Context, err error) error {
	t := s.tx
	undo := func() error {
		t.mu.Lock()
		t.before, t.after = t.before[:min(s.beforeMark, len(t.before))], t.after[:min(s.afterMark, len(t.after))]
		t.mu.Unlock()
		if !s.begun {
			return nil
		}
		// Not ctx: the savepoint must be undone even when ctx caused the failure.
		_, rbErr := t.Tx.ExecContext(context.WithoutCancel(ctx), "ROLLBACK TO SAVEPOINT jobmill_sp")
		return rbErr
	}
	if err != nil {
		if rbErr := undo(); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback to savepoint: %w", rbErr))
		}
		return err
	}
	if !s.begun {
		return nil
	}
	if _, relErr := t.Tx.ExecContext(ctx, "RELEASE SAVEPOINT jobmill_sp"); relErr != nil {
		_ = undo()
		return fmt.Errorf("release savepoint: %w", relErr)
	}
	return nil
}

// begin starts a transaction on db that stores can join (see Lazy).
func begin(ctx context.Context, db *sql.DB) (*Tx, error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	return &Tx{Tx: tx, db: db, open: true}, nil
}

// Beginner is watermill-sql's Beginner over db whose transactions are *Tx.
type Beginner struct{ DB *sql.DB }

var _ wsql.Beginner = Beginner{}

// BeginTx implements wsql.Beginner.
func (b Beginner) BeginTx(ctx context.Context, opts *sql.TxOptions) (wsql.Tx, error) {
	tx, err := b.DB.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &Tx{Tx: tx, db: b.DB, open: true}, nil
}

// ExecContext implements wsql.ContextExecutor.
func (b Beginner) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	return b.DB.ExecContext(ctx, query, args...)
}

// QueryContext implements wsql.ContextExecutor.
func (b Beginner) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return b.DB.QueryContext(ctx, query, args...)
}

type txKey struct{}

// Lazy is a batch transaction that begins when a store first asks for it (FromContext), on the asking
// handler's goroutine: a broker subscriber can open a batch per partition without holding a connection
// for batches that never touch the database, and without blocking its delivery loop on a busy pool.
type Lazy struct {
	db *sql.DB

	mu  sync.Mutex
	tx  *Tx
	err error
}

// NewLazy returns a batch on db that has not begun.
func NewLazy(db *sql.DB) *Lazy { return &Lazy{db: db} }

// Context attaches the batch to ctx.
func (l *Lazy) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, txKey{}, l)
}

// get begins the transaction on first use. A failed begin is remembered: the batch's handlers then run
// on transactions of their own.
func (l *Lazy) get(ctx context.Context) (*Tx, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tx == nil && l.err == nil {
		// Not ctx: a message's context ends with its handler, and the batch outlives it.
		l.tx, l.err = begin(context.WithoutCancel(ctx), l.db)
	}
	return l.tx, l.err
}

// Commit commits the transaction if it began.
func (l *Lazy) Commit() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tx == nil {
		return nil
	}
	return l.tx.Commit()
}

// Rollback rolls the transaction back if it began.
func (l *Lazy) Rollback() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tx == nil {
		return nil
	}
	return l.tx.Rollback()
}

// FromContext returns the open transaction of db that a log subscriber attached to a message's context.
func FromContext(ctx context.Context, db *sql.DB) (*Tx, bool) {
	var tx *Tx
	if l, ok := ctx.Value(txKey{}).(*Lazy); ok {
		if l.db != db {
			return nil, false
		}
		t, err := l.get(ctx)
		if err != nil {
			return nil, false
		}
		tx = t
	} else {
		wtx, found := wsql.TxFromContext(ctx)
		if !found {
			return nil, false
		}
		t, ok := wtx.(*Tx)
		if !ok || t.db != db {
			return nil, false
		}
		tx = t
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx, tx.open
}
