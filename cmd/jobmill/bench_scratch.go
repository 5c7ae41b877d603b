package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/jobmill/jobmill/config"
)

// useScratchDatabases points the configuration's PostgreSQL and MySQL backends at a new, empty schema
// (PostgreSQL) or database (MySQL), so that a benchmark never reads another run's leftovers (queued work,
// unfinished jobs, a long log) and leaves nothing behind. The returned function drops them.
func useScratchDatabases(ctx context.Context, cfg *config.Config) (drop func(), err error) {
	var drops []func()
	drop = func() {
		for _, d := range slices.Backward(drops) {
			d()
		}
	}
	uses := func(backend string) bool {
		return cfg.Store == backend || cfg.Log == backend || cfg.Queue == backend
	}
	name := "jobmill_bench_" + randomSuffix()
	if uses(config.BackendPostgres) {
		u, err := url.Parse(cfg.Postgres.URL)
		if err != nil {
			return drop, fmt.Errorf("postgres URL: %w", err)
		}
		d, err := scratch(ctx, "pgx", cfg.Postgres.URL, `CREATE SCHEMA `+name, `DROP SCHEMA `+name+` CASCADE`)
		if err != nil {
			return drop, fmt.Errorf("create a scratch schema on PostgreSQL at %s: %w", cfg.Redacted().Postgres.URL, err)
		}
		drops = append(drops, d)
		q := u.Query()
		q.Set("search_path", name) // pgx sends unknown URL parameters as session settings
		u.RawQuery = q.Encode()
		cfg.Postgres.URL = u.String()
	}
	if uses(config.BackendMySQL) {
		dsn, err := mysql.ParseDSN(cfg.MySQL.DSN)
		if err != nil {
			return drop, fmt.Errorf("mysql DSN: %w", err)
		}
		d, err := scratch(ctx, "mysql", cfg.MySQL.DSN, "CREATE DATABASE "+name, "DROP DATABASE "+name)
		if err != nil {
			return drop, fmt.Errorf("create a scratch database on MySQL: %w", err)
		}
		drops = append(drops, d)
		dsn.DBName = name
		cfg.MySQL.DSN = dsn.FormatDSN()
	}
	return drop, nil
}

// scratch runs create on a new connection and returns a function that runs remove.
func scratch(ctx context.Context, driver, dsn, create, remove string) (func(), error) {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, create); err != nil {
		db.Close()
		return nil, err
	}
	return func() {
		_, _ = db.ExecContext(context.WithoutCancel(ctx), remove)
		db.Close()
	}, nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
