package sqltx_test

import (
	"context"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/jobmill/jobmill/adapters/sqltx"
	"github.com/jobmill/jobmill/internal/servertest"
)

// A lazy batch begins on first use, gives every later user the same transaction, and commits or rolls
// back only what it began; a batch nobody used costs no connection.
func TestLazyBatch(t *testing.T) {
	db := servertest.OpenPostgres(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE lazy_rows (n INT)`); err != nil {
		t.Fatal(err)
	}
	count := func() (n int) {
		t.Helper()
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM lazy_rows`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	unused := sqltx.NewLazy(db)
	if err := unused.Commit(); err != nil {
		t.Fatalf("commit of a batch that never began: %v", err)
	}
	if got := db.Stats().InUse; got != 0 {
		t.Fatalf("%d connections in use after an unused batch", got)
	}

	for _, commit := range []bool{true, false} {
		batch := sqltx.NewLazy(db)
		bctx := batch.Context(ctx)
		first, ok := sqltx.FromContext(bctx, db)
		if !ok {
			t.Fatal("no transaction from a lazy batch")
		}
		if _, err := first.ExecContext(ctx, `INSERT INTO lazy_rows VALUES (1)`); err != nil {
			t.Fatal(err)
		}
		second, ok := sqltx.FromContext(bctx, db)
		if !ok || second != first {
			t.Fatal("a second user of the batch got another transaction")
		}
		if _, ok := sqltx.FromContext(bctx, servertest.Reopen(t, db)); ok {
			t.Fatal("a batch of one database was handed to a store of another")
		}
		before := count()
		end := batch.Rollback
		if commit {
			end = batch.Commit
		}
		if err := end(); err != nil {
			t.Fatal(err)
		}
		want := before
		if commit {
			want++
		}
		if got := count(); got != want {
			t.Fatalf("commit=%v: %d rows after the batch ended, want %d", commit, got, want)
		}
		if _, ok := sqltx.FromContext(bctx, db); ok {
			t.Fatal("an ended batch is still handed out")
		}
	}
}
