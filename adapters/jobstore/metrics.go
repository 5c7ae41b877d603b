package jobstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jobmill/jobmill/app/job"
)

// Figures for the metrics endpoint, read at scrape time from the jobs table on the read pool. Both are
// served by the (state, …) index on jobs: the counts read the index alone, and the in-flight sum visits
// only the jobs in step 2.

const (
	qJobCountsByState = `SELECT state, COUNT(*) FROM jobs GROUP BY state`
	// in_flight is kept only while step 2 runs: a job that ends mid-step keeps its last value, which no
	// longer means anything is running.
	qSubJobsInFlight = `SELECT COALESCE(SUM(in_flight), 0) FROM jobs WHERE state = ?`
)

// JobCountsByState counts the jobs in each state; states without jobs are absent.
func (s *SQLite) JobCountsByState(ctx context.Context) (map[job.State]int64, error) {
	return jobCountsByState(ctx, s.db.Read)
}

// SubJobsInFlight is the number of sub-jobs dispatched and not yet finished, over every job in step 2.
func (s *SQLite) SubJobsInFlight(ctx context.Context) (int64, error) {
	return subJobsInFlight(ctx, s.db.Read, qSubJobsInFlight)
}

// JobCountsByState counts the jobs in each state; states without jobs are absent.
func (s *SQL) JobCountsByState(ctx context.Context) (map[job.State]int64, error) {
	return jobCountsByState(ctx, s.db)
}

// SubJobsInFlight is the number of sub-jobs dispatched and not yet finished, over every job in step 2.
func (s *SQL) SubJobsInFlight(ctx context.Context) (int64, error) {
	return subJobsInFlight(ctx, s.db, s.rebind(qSubJobsInFlight))
}

func jobCountsByState(ctx context.Context, db *sql.DB) (map[job.State]int64, error) {
	rows, err := db.QueryContext(ctx, qJobCountsByState)
	if err != nil {
		return nil, fmt.Errorf("count jobs by state: %w", err)
	}
	defer rows.Close()
	out := map[job.State]int64{}
	for rows.Next() {
		var (
			name string
			n    int64
		)
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("count jobs by state: %w", err)
		}
		st, err := job.ParseState(name)
		if err != nil {
			return nil, fmt.Errorf("count jobs by state: %w", err)
		}
		out[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count jobs by state: %w", err)
	}
	return out, nil
}

func subJobsInFlight(ctx context.Context, db *sql.DB, q string) (int64, error) {
	// SUM is NUMERIC on PostgreSQL and DECIMAL on MySQL; both arrive as text that Scan converts.
	var n int64
	if err := db.QueryRowContext(ctx, q, string(job.StateStep2Running)).Scan(&n); err != nil {
		return 0, fmt.Errorf("sum sub-jobs in flight: %w", err)
	}
	return n, nil
}
