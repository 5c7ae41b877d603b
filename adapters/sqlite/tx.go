package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
)

// HookTx is a write transaction on DB.Write with after-commit callbacks.
// It implements watermill-sql's Tx, so the log subscriber runs on it and
// wsql.TxFromContext(msg.Context()) inside a handler returns a *HookTx.
//
// While a HookTx is open it owns the only write connection: any other write
// on the same DB (DB.InTx with an unrelated context, a publisher constructed
// with NewLogPublisher/NewQueuePublisher whose messages do not carry this
// transaction in their context) waits until it ends, which is a deadlock if
// the waiting code runs inside the transaction's own critical path.
type HookTx struct {
	tx *sql.Tx
	db *DB

	mu     sync.Mutex
	state  txState
	hooks  []func()
	before []func() error
	values map[any]any
}

type txState int

const (
	txOpen txState = iota
	txCommitted
	txRolledBack
)

var (
	_ wsql.Tx       = (*HookTx)(nil)
	_ wsql.Beginner = (*Beginner)(nil)
)

// SQL returns the underlying transaction, for code that wants database/sql types.
func (t *HookTx) SQL() *sql.Tx { return t.tx }

// ExecContext implements wsql.ContextExecutor.
func (t *HookTx) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	return t.tx.ExecContext(ctx, query, args...)
}

// QueryContext implements wsql.ContextExecutor.
func (t *HookTx) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return t.tx.QueryContext(ctx, query, args...)
}

// AfterCommit registers fn to run after a successful Commit, in registration
// order, on the committing goroutine. fn never runs if the transaction rolls
// back (or the savepoint it was registered in is rolled back by DB.InTx).
// Registered after the commit, fn runs at once.
func (t *HookTx) AfterCommit(fn func()) {
	t.mu.Lock()
	switch t.state {
	case txOpen:
		t.hooks = append(t.hooks, fn)
		t.mu.Unlock()
	case txCommitted:
		t.mu.Unlock()
		fn()
	default:
		t.mu.Unlock()
	}
}

// BeforeCommit registers fn to run just before Commit, in registration order; an error from fn rolls the
// transaction back and is returned by Commit. It lets code buffer writes for the whole transaction (a
// log subscriber's batch) and write them once. Register it outside any savepoint: DB.InTx drops
// callbacks registered inside a savepoint it rolls back.
func (t *HookTx) BeforeCommit(fn func() error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == txOpen {
		t.before = append(t.before, fn)
	}
}

// Value returns what SetValue stored under key in this transaction, or nil.
func (t *HookTx) Value(key any) any {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.values[key]
}

// SetValue stores per-transaction state (a cache that must not outlive the transaction).
func (t *HookTx) SetValue(key, v any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.values == nil {
		t.values = map[any]any{}
	}
	t.values[key] = v
}

// Commit runs the BeforeCommit callbacks, commits the transaction and then runs the AfterCommit callbacks.
func (t *HookTx) Commit() error {
	t.mu.Lock()
	before := t.before
	t.before = nil
	t.mu.Unlock()
	for _, fn := range before {
		if err := fn(); err != nil {
			_ = t.Rollback()
			return fmt.Errorf("sqlite: before commit: %w", err)
		}
	}
	if err := t.tx.Commit(); err != nil {
		t.finish(txRolledBack)
		return err
	}
	for _, fn := range t.finish(txCommitted) {
		fn()
	}
	return nil
}

// Rollback aborts the transaction and drops the AfterCommit callbacks.
func (t *HookTx) Rollback() error {
	err := t.tx.Rollback()
	t.finish(txRolledBack)
	return err
}

func (t *HookTx) finish(s txState) []func() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state != txOpen {
		return nil
	}
	t.state = s
	hooks := t.hooks
	t.hooks, t.before, t.values = nil, nil, nil
	return hooks
}

func (t *HookTx) isOpen() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state == txOpen
}

// inSavepoint runs fn inside a savepoint of t, so an error undoes fn's writes
// and callbacks without aborting the enclosing transaction.
func (t *HookTx) inSavepoint(ctx context.Context, fn func(tx *HookTx) error) (err error) {
	if _, err := t.tx.StmtContext(ctx, t.db.spBegin).ExecContext(ctx); err != nil {
		return fmt.Errorf("sqlite: savepoint: %w", err)
	}
	t.mu.Lock()
	mark, beforeMark := len(t.hooks), len(t.before)
	t.mu.Unlock()

	undo := func() error {
		t.mu.Lock()
		if len(t.hooks) > mark {
			t.hooks = t.hooks[:mark]
		}
		if len(t.before) > beforeMark {
			t.before = t.before[:beforeMark]
		}
		t.mu.Unlock()
		// Not ctx: the savepoint must be undone even when ctx caused the failure.
		bg := context.WithoutCancel(ctx)
		if _, err := t.tx.StmtContext(bg, t.db.spRollback).ExecContext(bg); err != nil {
			return err
		}
		_, err := t.tx.StmtContext(bg, t.db.spRelease).ExecContext(bg)
		return err
	}

	defer func() {
		if p := recover(); p != nil {
			_ = undo()
			panic(p)
		}
	}()

	if err := fn(t); err != nil {
		if rbErr := undo(); rbErr != nil {
			return errors.Join(err, fmt.Errorf("sqlite: rollback to savepoint: %w", rbErr))
		}
		return err
	}
	if _, err := t.tx.StmtContext(ctx, t.db.spRelease).ExecContext(ctx); err != nil {
		_ = undo()
		return fmt.Errorf("sqlite: release savepoint: %w", err)
	}
	return nil
}

// Begin starts a write transaction (BEGIN IMMEDIATE) on the write connection.
// The caller must Commit or Rollback it; until then every other writer of
// this DB waits.
func (db *DB) Begin(ctx context.Context) (*HookTx, error) {
	return db.beginTx(ctx, nil)
}

func (db *DB) beginTx(ctx context.Context, opts *sql.TxOptions) (*HookTx, error) {
	tx, err := db.Write.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("sqlite: begin on %s: %w", db.Path, err)
	}
	return &HookTx{tx: tx, db: db}, nil
}

// InTx runs fn in a write transaction and commits it if fn returns nil, then
// runs the AfterCommit callbacks; otherwise it rolls back.
//
// If ctx already carries an open *HookTx of this DB (the context of a message
// consumed by a log subscriber, see TxFromContext), fn runs inside that
// transaction under a savepoint instead: beginning a second transaction would
// wait forever for the write connection the outer one holds. The work then
// commits with the outer transaction (for a log subscriber: with the consumer
// offset), and fn's callbacks run after that commit.
func (db *DB) InTx(ctx context.Context, fn func(tx *HookTx) error) (err error) {
	if outer, ok := TxFromContext(ctx); ok && outer.db == db && outer.isOpen() {
		return outer.inSavepoint(ctx, fn)
	}

	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
	}()
	if err := fn(tx); err != nil {
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("sqlite: rollback: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit on %s: %w", db.Path, err)
	}
	return nil
}

// TxFromContext returns the *HookTx a log subscriber attached to a message's
// context (wsql.TxFromContext with the concrete type).
func TxFromContext(ctx context.Context) (*HookTx, bool) {
	if ctx == nil {
		return nil, false
	}
	tx, ok := wsql.TxFromContext(ctx)
	if !ok {
		return nil, false
	}
	htx, ok := tx.(*HookTx)
	return htx, ok
}

// Beginner adapts a DB to watermill-sql: its transactions are *HookTx on the
// write connection and its statements run on the write connection.
type Beginner struct {
	db *DB
}

// Beginner returns the watermill-sql Beginner of db.
func (db *DB) Beginner() *Beginner { return &Beginner{db: db} }

// BeginTx implements wsql.Beginner. SQLite ignores isolation levels: every
// transaction is serializable.
func (b *Beginner) BeginTx(ctx context.Context, opts *sql.TxOptions) (wsql.Tx, error) {
	tx, err := b.db.beginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return tx, nil
}

// ExecContext implements wsql.ContextExecutor on the write connection.
func (b *Beginner) ExecContext(ctx context.Context, query string, args ...any) (wsql.Result, error) {
	return b.db.Write.ExecContext(ctx, query, args...)
}

// QueryContext implements wsql.ContextExecutor on the write connection.
func (b *Beginner) QueryContext(ctx context.Context, query string, args ...any) (wsql.Rows, error) {
	return b.db.Write.QueryContext(ctx, query, args...)
}
