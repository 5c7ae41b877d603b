package jobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/adapters/sqltx"
)

// ProjectionDB is what the stores of the read models built from the event log (statistics, timelines,
// notifications) need from the job store's database: their tables live beside the jobs, migrated with
// them, and their writes join the log consumer's batch transaction when there is one, so that the
// consumed offset commits with the effect, exactly as the manager's reactions do.
type ProjectionDB interface {
	// InTx runs fn in the transaction of the log batch that ctx carries (under a savepoint), or in a
	// transaction of its own.
	InTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error
	// ReadDB answers queries outside any transaction.
	ReadDB() *sql.DB
	// Rebind turns "?" placeholders into the database's own ("$1" on PostgreSQL).
	Rebind(q string) string
	// DialectName is "sqlite", "postgres" or "mysql", for the few statements that differ (upserts).
	DialectName() string
	// Prepare prepares the statements a read model runs per event, once, when its store is built.
	Prepare(ctx context.Context, queries ...string) error
	// Prepared wraps a transaction InTx handed out so that it runs those statements prepared.
	Prepared(tx *sql.Tx) *PreparedTx
}

var (
	_ ProjectionDB = (*SQLite)(nil)
	_ ProjectionDB = (*SQL)(nil)
)

// InTx implements ProjectionDB: sqlite.DB.InTx already joins a batch transaction found in ctx.
func (s *SQLite) InTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.db.InTx(ctx, func(htx *sqlite.HookTx) error { return fn(ctx, htx.SQL()) })
}

// ReadDB implements ProjectionDB.
func (s *SQLite) ReadDB() *sql.DB { return s.db.Read }

// Rebind implements ProjectionDB: SQLite takes "?".
func (s *SQLite) Rebind(q string) string { return q }

// DialectName implements ProjectionDB.
func (s *SQLite) DialectName() string { return "sqlite" }

// Prepare implements ProjectionDB: statements are prepared on the single write connection.
func (s *SQLite) Prepare(ctx context.Context, queries ...string) error {
	return s.projectionStmts.prepare(ctx, queries)
}

// Prepared implements ProjectionDB.
func (s *SQLite) Prepared(tx *sql.Tx) *PreparedTx {
	return &PreparedTx{tx: tx, cache: s.projectionStmts}
}

// InTx implements ProjectionDB.
func (s *SQL) InTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) (err error) {
	if outer, ok := sqltx.FromContext(ctx, s.db); ok {
		ev := &batchEvent{outer: outer}
		err := outer.InSavepoint(ctx, func() error { return fn(context.WithValue(ctx, batchEventKey{}, ev), outer.Tx) })
		if err == nil {
			for _, f := range ev.onSuccess {
				f()
			}
		}
		return err
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// batchEvent is one event's InTx inside an SQL log batch: read models that write behind stage changes
// with it, and they join the batch only if the event's savepoint is released.
type batchEvent struct {
	outer     *sqltx.Tx
	onSuccess []func()
}

type batchEventKey struct{}

// batchEventFrom returns the batch event ctx carries (nil outside an SQL log batch).
func batchEventFrom(ctx context.Context) *batchEvent {
	ev, _ := ctx.Value(batchEventKey{}).(*batchEvent)
	return ev
}

// ReadDB implements ProjectionDB.
func (s *SQL) ReadDB() *sql.DB { return s.db }

// Rebind implements ProjectionDB.
func (s *SQL) Rebind(q string) string { return s.rebind(q) }

// DialectName implements ProjectionDB.
func (s *SQL) DialectName() string { return string(s.dialect) }

// Prepare implements ProjectionDB.
func (s *SQL) Prepare(ctx context.Context, queries ...string) error {
	return s.projectionStmts.prepare(ctx, queries)
}

// Prepared implements ProjectionDB.
func (s *SQL) Prepared(tx *sql.Tx) *PreparedTx { return &PreparedTx{tx: tx, cache: s.projectionStmts} }

// PreparedTx runs a projection's statements inside tx through statements prepared once per process:
// read models run a handful of small statements per event, and parsing them again each time cost more
// than executing them (on SQLite most of all).
type PreparedTx struct {
	tx    *sql.Tx
	cache *stmtCache
}

// ExecContext is tx.ExecContext, through q's prepared statement when there is one.
func (p *PreparedTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if st, ok := p.cache.get(q); ok {
		return p.tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	}
	return p.tx.ExecContext(ctx, q, args...)
}

// QueryContext is tx.QueryContext, through q's prepared statement when there is one.
func (p *PreparedTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if st, ok := p.cache.get(q); ok {
		return p.tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	}
	return p.tx.QueryContext(ctx, q, args...)
}

// QueryRowContext is tx.QueryRowContext, through q's prepared statement when there is one.
func (p *PreparedTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	if st, ok := p.cache.get(q); ok {
		return p.tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
	}
	return p.tx.QueryRowContext(ctx, q, args...)
}

// stmtCache holds statements prepared on the pool the transactions take their connections from. It
// never prepares lazily: on SQLite a transaction holds the only write connection, and preparing on the
// pool from inside it would wait for that connection forever.
type stmtCache struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache { return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}} }

func (c *stmtCache) prepare(ctx context.Context, queries []string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range queries {
		if _, ok := c.stmts[q]; ok {
			continue
		}
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			return fmt.Errorf("prepare %.60q: %w", q, err)
		}
		c.stmts[q] = st
	}
	return nil
}

func (c *stmtCache) get(q string) (*sql.Stmt, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, ok := c.stmts[q]
	return st, ok
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	c.stmts = map[string]*sql.Stmt{}
	return errors.Join(errs...)
}
