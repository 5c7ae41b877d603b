package jobstore

import (
	"context"
	"database/sql"
	"fmt"

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

// InTx implements ProjectionDB.
func (s *SQL) InTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) (err error) {
	if outer, ok := sqltx.FromContext(ctx, s.db); ok {
		return outer.InSavepoint(ctx, func() error { return fn(ctx, outer.Tx) })
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

// ReadDB implements ProjectionDB.
func (s *SQL) ReadDB() *sql.DB { return s.db }

// Rebind implements ProjectionDB.
func (s *SQL) Rebind(q string) string { return s.rebind(q) }

// DialectName implements ProjectionDB.
func (s *SQL) DialectName() string { return string(s.dialect) }
