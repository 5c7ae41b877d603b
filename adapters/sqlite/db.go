// Package sqlite is jobmill's embedded database: one SQLite file that holds the
// engine's state, an ordered event log (a Watermill SQL transport with SQLite
// dialect adapters) and a leased work queue.
//
// SQLite allows one writer at a time. Every write in the process therefore goes
// through DB.Write, a pool of exactly one connection. Code that holds that
// connection (an open *HookTx, a message consumed from a log subscriber) must
// never wait for another use of it; see HookTx and DB.InTx.
package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const driverName = "sqlite"

// readConns is the size of the reader pool. WAL readers never block the
// writer or each other, so a few are enough for concurrent queries.
const readConns = 4

// DB is one SQLite file opened with two pools: Write has exactly one connection so writers never contend
// (SQLite allows one writer; a single connection means no SQLITE_BUSY inside the process), Read has several WAL readers.
type DB struct {
	Write *sql.DB
	Read  *sql.DB
	Path  string

	notify *notifier
	// logTopics records topics whose log tables are known to exist, so
	// publishers create them once instead of on every call.
	logTopics sync.Map
	// queueReady is set once the queue table is known to exist.
	queueReady atomic.Bool
	// savepoint statements, prepared once: a log batch opens one savepoint per message, and parsing
	// them each time cost as much as the message's own work.
	spBegin, spRelease, spRollback *sql.Stmt
}

// Open opens (creating if needed) the SQLite database at path, in WAL mode.
func Open(path string) (*DB, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	if strings.ContainsRune(path, '?') {
		// The driver splits the DSN at the first '?'.
		return nil, fmt.Errorf("sqlite: database path %q must not contain '?'", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("sqlite: create directory for %s: %w", path, err)
		}
	}

	common := url.Values{}
	common.Add("_pragma", "busy_timeout(10000)")
	common.Add("_pragma", "foreign_keys(ON)")
	common.Add("_pragma", "synchronous(NORMAL)")

	w := cloneValues(common)
	w.Add("_pragma", "journal_mode(WAL)")
	// BEGIN IMMEDIATE takes the write lock up front. A deferred transaction
	// that reads and then writes can fail with SQLITE_BUSY_SNAPSHOT when
	// another process committed in between; busy_timeout cannot retry that.
	w.Set("_txlock", "immediate")

	write, err := sql.Open(driverName, path+"?"+w.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	// Connect the writer first: it switches the file to WAL, which the
	// query-only readers could not do.
	if err := write.Ping(); err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}

	r := cloneValues(common)
	r.Add("_pragma", "query_only(1)")
	read, err := sql.Open(driverName, path+"?"+r.Encode())
	if err != nil {
		_ = write.Close()
		return nil, fmt.Errorf("sqlite: open %s for reading: %w", path, err)
	}
	read.SetMaxOpenConns(readConns)
	read.SetMaxIdleConns(readConns)
	if err := read.Ping(); err != nil {
		_ = read.Close()
		_ = write.Close()
		return nil, fmt.Errorf("sqlite: open %s for reading: %w", path, err)
	}

	db := &DB{Write: write, Read: read, Path: path, notify: newNotifier()}
	for q, dst := range map[string]**sql.Stmt{
		"SAVEPOINT " + savepointName:   &db.spBegin,
		"RELEASE " + savepointName:     &db.spRelease,
		"ROLLBACK TO " + savepointName: &db.spRollback,
	} {
		if *dst, err = write.Prepare(q); err != nil {
			_ = read.Close()
			_ = write.Close()
			return nil, fmt.Errorf("sqlite: prepare %q on %s: %w", q, path, err)
		}
	}
	return db, nil
}

// savepointName is shared by nested savepoints: SQLite resolves RELEASE and ROLLBACK TO to the innermost
// savepoint of that name, which is the one the current call opened.
const savepointName = "jobmill_sp"

// Close closes both pools.
func (db *DB) Close() error {
	err := errors.Join(db.Read.Close(), db.Write.Close())
	if err != nil {
		return fmt.Errorf("sqlite: close %s: %w", db.Path, err)
	}
	return nil
}

func cloneValues(v url.Values) url.Values {
	c := make(url.Values, len(v))
	for k, vs := range v {
		c[k] = append([]string(nil), vs...)
	}
	return c
}
