package jobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/timeline"
)

// TimelineStore keeps the status timeline (app/timeline) beside the jobs, in the tables of migration
// 00004, on SQLite, PostgreSQL or MySQL. A sub-job report costs five small indexed statements: lock the
// job's header row, number the entry (and find a previous delivery of its message), insert it, read the
// sub-job's entries, upsert the sub-job.
type TimelineStore struct {
	db ProjectionDB
	q  timelineQueries
}

var _ timeline.Store = (*TimelineStore)(nil)

// timelineQueries are the store's statements in the database's placeholder style.
type timelineQueries struct {
	lockHeader, createHeader, saveHeader string
	nextPos, insertEntry, subJobEntries  string
	saveSubJob, failWaiting              string
	header, entries, subJobs, subJobsIn  string
	countEntries, countSubJobs           string
}

const (
	timelineHeaderColumns = `job_id, tenant, type, state, state_seq, seq, total, step2_closed, started_at, ended_at,
		error, n_total, n_succeeded, n_failed, n_retries, n_timed_out, n_duplicates, n_late`
	timelineEntryColumns  = `pos, event_id, kind, seq, occurred_at, step, sub_index, attempt, duration_ns, detail`
	timelineSubJobColumns = `idx, state, attempts, failed_attempts, timed_out, last_error, last_error_at, duration_ns,
		finished_at`
)

// NewTimelineStore returns the status timeline's store on a job store's database (its tables come with
// the job store's migrations).
func NewTimelineStore(db ProjectionDB) (*TimelineStore, error) {
	if db == nil {
		return nil, errors.New("timeline store: database is required")
	}
	dialect := db.DialectName()
	lock, createHeader, saveSubJob := " FOR UPDATE", "", ""
	subJobEvents := "timeline_events"
	switch dialect {
	case "sqlite", "postgres":
		if dialect == "sqlite" {
			lock = "" // the transaction already holds the database's write lock
			// Without statistics SQLite prefers the primary key (job_id, pos) and scans every event of
			// the job for each report: quadratic in the job's size.
			subJobEvents = "timeline_events INDEXED BY timeline_events_subjob"
		}
		createHeader = `INSERT INTO timeline_jobs (job_id) VALUES (?) ON CONFLICT (job_id) DO NOTHING`
		saveSubJob = `INSERT INTO timeline_subjobs (job_id, ` + timelineSubJobColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (job_id, idx) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
				failed_attempts = excluded.failed_attempts, timed_out = excluded.timed_out,
				last_error = excluded.last_error, last_error_at = excluded.last_error_at,
				duration_ns = excluded.duration_ns, finished_at = excluded.finished_at`
	case "mysql":
		createHeader = `INSERT INTO timeline_jobs (job_id, error) VALUES (?, '') ON DUPLICATE KEY UPDATE job_id = job_id`
		saveSubJob = `INSERT INTO timeline_subjobs (job_id, ` + timelineSubJobColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON DUPLICATE KEY UPDATE state = VALUES(state), attempts = VALUES(attempts),
				failed_attempts = VALUES(failed_attempts), timed_out = VALUES(timed_out),
				last_error = VALUES(last_error), last_error_at = VALUES(last_error_at),
				duration_ns = VALUES(duration_ns), finished_at = VALUES(finished_at)`
	default:
		return nil, fmt.Errorf("timeline store: unknown dialect %q", dialect)
	}
	q := timelineQueries{
		lockHeader:   `SELECT ` + timelineHeaderColumns + ` FROM timeline_jobs WHERE job_id = ?` + lock,
		createHeader: createHeader,
		saveHeader: `UPDATE timeline_jobs SET tenant = ?, type = ?, state = ?, state_seq = ?, seq = ?, total = ?,
			step2_closed = ?, started_at = ?, ended_at = ?, error = ?, n_total = ?, n_succeeded = ?, n_failed = ?,
			n_retries = ?, n_timed_out = ?, n_duplicates = ?, n_late = ? WHERE job_id = ?`,
		nextPos: `SELECT (SELECT COALESCE(MAX(pos), 0) FROM timeline_events WHERE job_id = ?),
			(SELECT COUNT(*) FROM timeline_events WHERE event_id = ?)`,
		insertEntry: `INSERT INTO timeline_events (job_id, ` + timelineEntryColumns + `)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		subJobEntries: `SELECT ` + timelineEntryColumns + ` FROM ` + subJobEvents + `
			WHERE job_id = ? AND sub_index = ? ORDER BY pos`,
		saveSubJob: saveSubJob,
		failWaiting: `UPDATE timeline_subjobs SET state = '` + string(job.SubJobFailed) + `', finished_at = last_error_at
			WHERE job_id = ? AND state = '` + string(job.SubJobRetryWait) + `'`,
		header:       `SELECT ` + timelineHeaderColumns + ` FROM timeline_jobs WHERE job_id = ?`,
		entries:      `SELECT ` + timelineEntryColumns + ` FROM timeline_events WHERE job_id = ? AND pos > ? ORDER BY pos LIMIT ?`,
		subJobs:      `SELECT ` + timelineSubJobColumns + ` FROM timeline_subjobs WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?`,
		subJobsIn:    `SELECT ` + timelineSubJobColumns + ` FROM timeline_subjobs WHERE job_id = ? AND state = ? AND idx > ? ORDER BY idx LIMIT ?`,
		countEntries: `SELECT COALESCE(MAX(pos), 0) FROM timeline_events WHERE job_id = ?`,
		countSubJobs: `SELECT state, COUNT(*) FROM timeline_subjobs WHERE job_id = ? GROUP BY state`,
	}
	for _, s := range []*string{&q.lockHeader, &q.createHeader, &q.saveHeader, &q.nextPos, &q.insertEntry,
		&q.subJobEntries, &q.saveSubJob, &q.failWaiting, &q.header, &q.entries, &q.subJobs, &q.subJobsIn,
		&q.countEntries, &q.countSubJobs} {
		*s = db.Rebind(*s)
	}
	if err := db.Prepare(context.Background(), q.lockHeader, q.createHeader, q.saveHeader, q.nextPos, q.insertEntry,
		q.subJobEntries, q.saveSubJob); err != nil {
		return nil, fmt.Errorf("timeline store: %w", err)
	}
	return &TimelineStore{db: db, q: q}, nil
}

// Update implements timeline.Store.
func (s *TimelineStore) Update(ctx context.Context, fn func(ctx context.Context, tx timeline.Tx) error) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return fn(ctx, &timelineTx{q: &s.q, tx: s.db.Prepared(tx)})
	})
}

// Reset implements timeline.Store.
func (s *TimelineStore) Reset(ctx context.Context) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, table := range []string{"timeline_subjobs", "timeline_events", "timeline_jobs"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table); err != nil {
				return fmt.Errorf("empty %s: %w", table, err)
			}
		}
		return nil
	})
}

// Summary implements timeline.Store.
func (s *TimelineStore) Summary(ctx context.Context, jobID string) (timeline.Summary, error) {
	db := s.db.ReadDB()
	h, err := scanHeader(db.QueryRowContext(ctx, s.q.header, jobID))
	if errors.Is(err, sql.ErrNoRows) {
		return timeline.Summary{}, job.ErrNotFound
	}
	if err != nil {
		return timeline.Summary{}, err
	}
	sum := timeline.Summary{Header: h, SubJobs: map[job.SubJobState]int64{}}
	if err := db.QueryRowContext(ctx, s.q.countEntries, jobID).Scan(&sum.Events); err != nil {
		return timeline.Summary{}, err
	}
	rows, err := db.QueryContext(ctx, s.q.countSubJobs, jobID)
	if err != nil {
		return timeline.Summary{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			return timeline.Summary{}, err
		}
		sum.SubJobs[job.SubJobState(state)] = n
	}
	return sum, rows.Err()
}

// Entries implements timeline.Store.
func (s *TimelineStore) Entries(ctx context.Context, jobID string, afterPos int64, limit int) ([]timeline.Entry, error) {
	rows, err := s.db.ReadDB().QueryContext(ctx, s.q.entries, jobID, afterPos, limit)
	if err != nil {
		return nil, err
	}
	return collectEntries(rows)
}

// SubJobs implements timeline.Store.
func (s *TimelineStore) SubJobs(ctx context.Context, jobID string, state job.SubJobState, afterIndex int64, limit int) ([]timeline.SubJob, error) {
	var rows *sql.Rows
	var err error
	if state == "" {
		rows, err = s.db.ReadDB().QueryContext(ctx, s.q.subJobs, jobID, afterIndex, limit)
	} else {
		rows, err = s.db.ReadDB().QueryContext(ctx, s.q.subJobsIn, jobID, string(state), afterIndex, limit)
	}
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []timeline.SubJob
	for rows.Next() {
		var sj timeline.SubJob
		var state string
		var lastErrorAt, duration, finishedAt int64
		if err := rows.Scan(&sj.Index, &state, &sj.Attempts, &sj.FailedAttempts, &sj.TimedOut, &sj.LastError,
			&lastErrorAt, &duration, &finishedAt); err != nil {
			return nil, err
		}
		sj.State = job.SubJobState(state)
		sj.LastErrorAt, sj.Duration, sj.FinishedAt = fromMicros(lastErrorAt), time.Duration(duration), fromMicros(finishedAt)
		out = append(out, sj)
	}
	return out, rows.Err()
}

// timelineTx is the store inside one event's transaction.
type timelineTx struct {
	q  *timelineQueries
	tx *PreparedTx
}

// LockHeader implements timeline.Tx. The row lock (FOR UPDATE; on SQLite the write transaction itself)
// serializes the events of one job, so that numbering entries and closing step 2 never race with another
// consumer applying the same job's events.
func (t *timelineTx) LockHeader(ctx context.Context, jobID string) (timeline.Header, error) {
	h, err := scanHeader(t.tx.QueryRowContext(ctx, t.q.lockHeader, jobID))
	if !errors.Is(err, sql.ErrNoRows) {
		return h, err
	}
	if _, err := t.tx.ExecContext(ctx, t.q.createHeader, jobID); err != nil {
		return timeline.Header{}, fmt.Errorf("create timeline header: %w", err)
	}
	return scanHeader(t.tx.QueryRowContext(ctx, t.q.lockHeader, jobID))
}

// SaveHeader implements timeline.Tx.
func (t *timelineTx) SaveHeader(ctx context.Context, h timeline.Header) error {
	c := h.Counts
	_, err := t.tx.ExecContext(ctx, t.q.saveHeader, h.Tenant, h.Type, string(h.State), h.StateSeq, h.Seq, h.Total,
		h.Step2Closed, micros(h.StartedAt), micros(h.EndedAt), h.Error, c.Total, c.Succeeded, c.Failed, c.Retries,
		c.TimedOut, c.Duplicates, c.Late, h.JobID)
	return err
}

// Append implements timeline.Tx.
func (t *timelineTx) Append(ctx context.Context, jobID string, e timeline.Entry) (bool, error) {
	var last, seen int64
	if err := t.tx.QueryRowContext(ctx, t.q.nextPos, jobID, e.EventID).Scan(&last, &seen); err != nil {
		return false, err
	}
	if seen > 0 {
		return false, nil
	}
	_, err := t.tx.ExecContext(ctx, t.q.insertEntry, jobID, last+1, e.EventID, e.Kind, e.Seq, micros(e.At), e.Step,
		e.Index, e.Attempt, int64(e.Duration), e.Detail)
	return err == nil, err
}

// SubJobEntries implements timeline.Tx.
func (t *timelineTx) SubJobEntries(ctx context.Context, jobID string, index int64) ([]timeline.Entry, error) {
	rows, err := t.tx.QueryContext(ctx, t.q.subJobEntries, jobID, index)
	if err != nil {
		return nil, err
	}
	return collectEntries(rows)
}

// SaveSubJob implements timeline.Tx.
func (t *timelineTx) SaveSubJob(ctx context.Context, jobID string, s timeline.SubJob) error {
	_, err := t.tx.ExecContext(ctx, t.q.saveSubJob, jobID, s.Index, string(s.State), s.Attempts, s.FailedAttempts,
		s.TimedOut, s.LastError, micros(s.LastErrorAt), int64(s.Duration), micros(s.FinishedAt))
	return err
}

// FailWaitingSubJobs implements timeline.Tx.
func (t *timelineTx) FailWaitingSubJobs(ctx context.Context, jobID string) error {
	_, err := t.tx.ExecContext(ctx, t.q.failWaiting, jobID)
	return err
}

func scanHeader(row *sql.Row) (timeline.Header, error) {
	var h timeline.Header
	var state string
	var startedAt, endedAt int64
	c := &h.Counts
	if err := row.Scan(&h.JobID, &h.Tenant, &h.Type, &state, &h.StateSeq, &h.Seq, &h.Total, &h.Step2Closed,
		&startedAt, &endedAt, &h.Error, &c.Total, &c.Succeeded, &c.Failed, &c.Retries, &c.TimedOut, &c.Duplicates,
		&c.Late); err != nil {
		return timeline.Header{}, err
	}
	h.State, h.StartedAt, h.EndedAt = job.State(state), fromMicros(startedAt), fromMicros(endedAt)
	return h, nil
}

func collectEntries(rows *sql.Rows) ([]timeline.Entry, error) {
	defer rows.Close()
	var out []timeline.Entry
	for rows.Next() {
		var e timeline.Entry
		var at, duration int64
		if err := rows.Scan(&e.Pos, &e.EventID, &e.Kind, &e.Seq, &at, &e.Step, &e.Index, &e.Attempt, &duration,
			&e.Detail); err != nil {
			return nil, err
		}
		e.At, e.Duration = fromMicros(at), time.Duration(duration)
		out = append(out, e)
	}
	return out, rows.Err()
}
