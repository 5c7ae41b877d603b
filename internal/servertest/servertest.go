// Package servertest gives tests an isolated PostgreSQL schema or MySQL database on the real local servers.
// JOBMILL_TEST_POSTGRES (a URL) and JOBMILL_TEST_MYSQL (a go-sql-driver DSN without database) override the
// local defaults. An unreachable server skips the test, unless CI is "true": then it fails.
package servertest

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

var (
	postgresURL = envOr("JOBMILL_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable")
	mysqlDSN    = envOr("JOBMILL_TEST_MYSQL", "root@tcp(127.0.0.1:3306)/")
)

// dsns remembers how each test pool was opened, so that a test can open a second pool on the same
// schema or database (another process).
var (
	dsnMu sync.Mutex
	dsns  = map[*sql.DB]struct{ driver, dsn string }{}
)

func remember(db *sql.DB, driver, dsn string) {
	dsnMu.Lock()
	defer dsnMu.Unlock()
	dsns[db] = struct{ driver, dsn string }{driver, dsn}
}

// Unreachable skips the test naming the server, or fails it under CI=true.
func Unreachable(t testing.TB, server string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is unreachable: %v", server, err)
	}
	t.Skipf("%s is unreachable (%v); start it or set CI=true to fail instead", server, err)
}

func scratchName() string {
	return "jm_" + strings.ToLower(strings.ReplaceAll(watermill.NewShortUUID(), "-", ""))
}

func ping(db *sql.DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// OpenPostgres returns a pool whose search_path is a schema of the test's own, dropped at cleanup.
func OpenPostgres(t testing.TB) *sql.DB {
	t.Helper()
	admin, err := sql.Open("pgx", postgresURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(admin); err != nil {
		admin.Close()
		Unreachable(t, "PostgreSQL ("+postgresURL+")", err)
	}
	schema := scratchName()
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	sep := "?"
	if strings.Contains(postgresURL, "?") {
		sep = "&"
	}
	dsn := postgresURL + sep + "search_path=" + schema
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	remember(db, "pgx", dsn)
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Error(err)
		}
		admin.Close()
	})
	return db
}

// OpenMySQL returns a pool on a database of the test's own, dropped at cleanup.
func OpenMySQL(t testing.TB) *sql.DB {
	t.Helper()
	admin, err := sql.Open("mysql", mysqlDSN)
	if err != nil {
		t.Fatal(err)
	}
	if err := ping(admin); err != nil {
		admin.Close()
		Unreachable(t, "MySQL/MariaDB ("+mysqlDSN+")", err)
	}
	name := scratchName()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	dsn := strings.Replace(mysqlDSN, ")/", ")/"+name, 1)
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	remember(db, "mysql", dsn)
	t.Cleanup(func() {
		db.Close()
		if _, err := admin.Exec("DROP DATABASE " + name); err != nil {
			t.Error(err)
		}
		admin.Close()
	})
	return db
}

// Reopen opens a second pool on the schema or database of a pool from OpenPostgres or OpenMySQL, as
// another process would.
func Reopen(t testing.TB, db *sql.DB) *sql.DB {
	t.Helper()
	dsnMu.Lock()
	d, ok := dsns[db]
	dsnMu.Unlock()
	if !ok {
		t.Fatal("servertest: unknown test DB")
	}
	other, err := sql.Open(d.driver, d.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	return other
}
