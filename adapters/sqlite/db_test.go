package sqlite

import (
	"errors"
	"testing"
)

func TestOpenPragmas(t *testing.T) {
	db := openTestDB(t)
	var mode string
	if err := db.Read.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q", mode)
	}
	var fk, busy int
	if err := db.Write.QueryRow("PRAGMA foreign_keys").Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if err := db.Write.QueryRow("PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if fk != 1 || busy != 10000 {
		t.Fatalf("foreign_keys=%d busy_timeout=%d", fk, busy)
	}
	if _, err := db.Read.Exec("CREATE TABLE x (a)"); err == nil {
		t.Fatal("read pool accepted a write")
	}
}

func TestInTxHooks(t *testing.T) {
	db := openTestDB(t)
	ctx := testCtx(t)
	if _, err := db.Write.Exec("CREATE TABLE t (v TEXT)"); err != nil {
		t.Fatal(err)
	}

	var order []int
	err := db.InTx(ctx, func(tx *HookTx) error {
		tx.AfterCommit(func() { order = append(order, 1) })
		tx.AfterCommit(func() { order = append(order, 2) })
		_, err := tx.ExecContext(ctx, "INSERT INTO t VALUES ('a')")
		return err
	})
	if err != nil || len(order) != 2 || order[0] != 1 || order[1] != 2 {
		t.Fatalf("err=%v order=%v", err, order)
	}

	boom := errors.New("boom")
	ran := false
	err = db.InTx(ctx, func(tx *HookTx) error {
		tx.AfterCommit(func() { ran = true })
		if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES ('b')"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || ran {
		t.Fatalf("err=%v ran=%v", err, ran)
	}
	var n int
	if err := db.Read.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows=%d err=%v", n, err)
	}
}
