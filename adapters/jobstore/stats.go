package jobstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jobmill/jobmill/app/stats"
)

// StatsStore keeps the statistics (app/stats) beside the jobs, in the tables of migration 00003, on
// SQLite, PostgreSQL or MySQL. Its writes join the log consumer's batch transaction. A sub-job's success
// report costs six small indexed statements: lock the job's row, record the event id, read and upsert the
// sub-job's row, add to the throughput bucket, save the job's row.
type StatsStore struct {
	db ProjectionDB
	q  statsQueries
	// lock ends the statements that read a job's row in order to change it.
	lock string
}

var _ stats.Store = (*StatsStore)(nil)

// statsQueries are the store's statements in the database's placeholder style.
type statsQueries struct {
	job, createJob, saveJob               string
	markEvent, subJob, saveSubJob         string
	attempt, saveAttempt                  string
	addCompletions, addError              string
	jobErrors, deleteErrors, insertError  string
	dropEvents, dropSubJobs, dropAttempts string
}

const statsJobColumns = `job_id, tenant, type, created_at, step1_done, step2_start, step2_done, step3_done, ended_at,
	outcome, total, step1_attempts, step3_attempts, subjobs, subjob_attempts, succeeded, timed_out, duplicates,
	step2_closed, step2_succeeded, step2_failed, final_total, final_succeeded, final_failed, final_retries,
	final_timed_out, final_duplicates, final_late, duration_sum, durations`

// statsTables are the statistics' tables, children first.
var statsTables = []string{"stats_errors", "stats_completions", "stats_attempts", "stats_subjobs", "stats_events", "stats_jobs"}

// NewStatsStore returns the statistics' store on a job store's database (its tables come with the job
// store's migrations).
func NewStatsStore(db ProjectionDB) (*StatsStore, error) {
	if db == nil {
		return nil, errors.New("stats store: database is required")
	}
	s := &StatsStore{db: db, lock: " FOR UPDATE"}
	switch db.DialectName() {
	case "sqlite":
		s.lock = "" // the transaction already holds the database's write lock
	case "postgres", "mysql":
	default:
		return nil, fmt.Errorf("stats store: unknown dialect %q", db.DialectName())
	}
	r := db.Rebind
	s.q = statsQueries{
		job:       r(`SELECT ` + statsJobColumns + ` FROM stats_jobs WHERE job_id = ?` + s.lock),
		createJob: r(s.insertIgnore(`stats_jobs (job_id) VALUES (?)`)),
		saveJob: r(`UPDATE stats_jobs SET tenant = ?, type = ?, created_at = ?, step1_done = ?, step2_start = ?,
			step2_done = ?, step3_done = ?, ended_at = ?, outcome = ?, total = ?, step1_attempts = ?, step3_attempts = ?,
			subjobs = ?, subjob_attempts = ?, succeeded = ?, timed_out = ?, duplicates = ?, step2_closed = ?,
			step2_succeeded = ?, step2_failed = ?, final_total = ?, final_succeeded = ?, final_failed = ?,
			final_retries = ?, final_timed_out = ?, final_duplicates = ?, final_late = ?, duration_sum = ?, durations = ?
			WHERE job_id = ?`),
		markEvent: r(s.insertIgnore(`stats_events (job_id, event_id) VALUES (?, ?)`)),
		subJob: r(`SELECT max_attempt, success_attempt, success_at, success_duration FROM stats_subjobs
			WHERE job_id = ? AND idx = ?`),
		saveSubJob: r(s.upsert("stats_subjobs", []string{"job_id", "idx"},
			[]string{"max_attempt", "success_attempt", "success_at", "success_duration"}, false)),
		attempt: r(`SELECT error_text, timed_out FROM stats_attempts
			WHERE job_id = ? AND step = ? AND idx = ? AND attempt = ?`),
		saveAttempt: r(s.upsert("stats_attempts", []string{"job_id", "step", "idx", "attempt"},
			[]string{"error_text", "timed_out"}, false)),
		addCompletions: r(s.upsert("stats_completions", []string{"job_id", "bucket"}, []string{"completed"}, true)),
		addError:       r(s.upsert("stats_errors", []string{"job_id", "message"}, []string{"occurrences"}, true)),
		jobErrors:      r(`SELECT message, occurrences FROM stats_errors WHERE job_id = ?`),
		deleteErrors:   r(`DELETE FROM stats_errors WHERE job_id = ?`),
		insertError:    r(`INSERT INTO stats_errors (job_id, message, occurrences) VALUES (?, ?, ?)`),
		dropEvents:     r(`DELETE FROM stats_events WHERE job_id = ?`),
		dropSubJobs:    r(`DELETE FROM stats_subjobs WHERE job_id = ?`),
		dropAttempts:   r(`DELETE FROM stats_attempts WHERE job_id = ?`),
	}
	q := s.q
	if err := db.Prepare(context.Background(), q.job, q.createJob, q.saveJob, q.markEvent, q.subJob, q.saveSubJob,
		q.attempt, q.saveAttempt, q.addCompletions, q.addError); err != nil {
		return nil, fmt.Errorf("stats store: %w", err)
	}
	return s, nil
}

func (s *StatsStore) mysql() bool { return s.db.DialectName() == "mysql" }

// insertIgnore inserts a row unless its key exists; the statement then affects no row.
func (s *StatsStore) insertIgnore(into string) string {
	if s.mysql() {
		return `INSERT IGNORE INTO ` + into
	}
	return `INSERT INTO ` + into + ` ON CONFLICT DO NOTHING`
}

// upsert inserts a row or, when its key exists, sets its columns (add: adds them to the stored values).
func (s *StatsStore) upsert(table string, key, cols []string, add bool) string {
	all := append(append([]string{}, key...), cols...)
	q := `INSERT INTO ` + table + ` (` + strings.Join(all, ", ") + `) VALUES (?` + strings.Repeat(", ?", len(all)-1) + `)`
	sets := make([]string, len(cols))
	for i, c := range cols {
		switch {
		case s.mysql() && add:
			sets[i] = c + ` = ` + c + ` + VALUES(` + c + `)`
		case s.mysql():
			sets[i] = c + ` = VALUES(` + c + `)`
		case add:
			sets[i] = c + ` = ` + table + `.` + c + ` + excluded.` + c
		default:
			sets[i] = c + ` = excluded.` + c
		}
	}
	if s.mysql() {
		return q + ` ON DUPLICATE KEY UPDATE ` + strings.Join(sets, ", ")
	}
	return q + ` ON CONFLICT (` + strings.Join(key, ", ") + `) DO UPDATE SET ` + strings.Join(sets, ", ")
}

// Update implements stats.Store.
func (s *StatsStore) Update(ctx context.Context, fn func(ctx context.Context, tx stats.Tx) error) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return fn(ctx, statsTx{s: s, tx: s.db.Prepared(tx)})
	})
}

// Reset implements stats.Store.
func (s *StatsStore) Reset(ctx context.Context) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, t := range statsTables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t); err != nil {
				return fmt.Errorf("delete %s: %w", t, err)
			}
		}
		return nil
	})
}

// where selects the jobs of q from stats_jobs under alias.
func (s *StatsStore) where(q stats.Query, alias string) (string, []any) {
	if q.JobID != "" {
		return alias + `.job_id = ?`, []any{q.JobID}
	}
	conds, args := []string{alias + `.created_at > 0`}, []any{}
	if q.Tenant != "" {
		conds, args = append(conds, alias+`.tenant = ?`), append(args, q.Tenant)
	}
	if q.Type != "" {
		conds, args = append(conds, alias+`.type = ?`), append(args, q.Type)
	}
	if !q.CreatedAfter.IsZero() {
		conds, args = append(conds, alias+`.created_at >= ?`), append(args, ceilMicros(q.CreatedAfter))
	}
	if !q.CreatedBefore.IsZero() {
		conds, args = append(conds, alias+`.created_at < ?`), append(args, ceilMicros(q.CreatedBefore))
	}
	return strings.Join(conds, ` AND `), args
}

// joined is the FROM and WHERE of a read of table's rows (alias t) for the jobs q selects.
func (s *StatsStore) joined(table string, q stats.Query) (string, []any) {
	if q.JobID != "" {
		return ` FROM ` + table + ` t WHERE t.job_id = ?`, []any{q.JobID}
	}
	cond, args := s.where(q, "j")
	return ` FROM ` + table + ` t JOIN stats_jobs j ON j.job_id = t.job_id WHERE ` + cond, args
}

// Jobs implements stats.Store.
func (s *StatsStore) Jobs(ctx context.Context, q stats.Query, fn func(stats.Record) error) error {
	cond, args := s.where(q, "j")
	rows, err := s.db.ReadDB().QueryContext(ctx, s.db.Rebind(`SELECT `+prefixed(statsJobColumns, "j")+
		` FROM stats_jobs j WHERE `+cond), args...)
	if err != nil {
		return fmt.Errorf("read statistics: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanStatsJob(rows)
		if err != nil {
			return err
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// prefixed qualifies every column of a column list with alias.
func prefixed(columns, alias string) string {
	cols := strings.Split(columns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// CompletionSpan implements stats.Store.
func (s *StatsStore) CompletionSpan(ctx context.Context, q stats.Query) (first, last time.Time, err error) {
	from, args := s.joined("stats_completions", q)
	var lo, hi sql.NullInt64
	err = s.db.ReadDB().QueryRowContext(ctx, s.db.Rebind(`SELECT MIN(t.bucket), MAX(t.bucket)`+from+
		` AND t.completed <> 0`), args...).Scan(&lo, &hi)
	if err != nil || !lo.Valid {
		return time.Time{}, time.Time{}, err
	}
	return fromMicros(lo.Int64).UTC(), fromMicros(hi.Int64).UTC(), nil
}

// Completions implements stats.Store.
func (s *StatsStore) Completions(ctx context.Context, q stats.Query, width time.Duration) ([]stats.Bucket, error) {
	w := width.Truncate(time.Second).Microseconds()
	if w <= 0 {
		return nil, fmt.Errorf("throughput bucket of %s: want whole seconds", width)
	}
	from, args := s.joined("stats_completions", q)
	// The width is an integer the store formats itself; as a literal it keeps the GROUP BY expression
	// identical to the selected one on every database.
	bucket := `t.bucket - t.bucket % ` + strconv.FormatInt(w, 10)
	rows, err := s.db.ReadDB().QueryContext(ctx, s.db.Rebind(`SELECT `+bucket+`, SUM(t.completed)`+from+
		` GROUP BY `+bucket+` HAVING SUM(t.completed) <> 0 ORDER BY 1`), args...)
	if err != nil {
		return nil, fmt.Errorf("read throughput: %w", err)
	}
	defer rows.Close()
	var out []stats.Bucket
	for rows.Next() {
		var start, n int64
		if err := rows.Scan(&start, &n); err != nil {
			return nil, err
		}
		out = append(out, stats.Bucket{Start: fromMicros(start).UTC(), Completed: n})
	}
	return out, rows.Err()
}

// TopErrors implements stats.Store.
func (s *StatsStore) TopErrors(ctx context.Context, q stats.Query, n int) ([]stats.ErrorCount, error) {
	from, args := s.joined("stats_errors", q)
	rows, err := s.db.ReadDB().QueryContext(ctx, s.db.Rebind(`SELECT t.message, SUM(t.occurrences)`+from+
		` GROUP BY t.message HAVING SUM(t.occurrences) > 0 ORDER BY 2 DESC, t.message LIMIT ?`), append(args, n)...)
	if err != nil {
		return nil, fmt.Errorf("read error counts: %w", err)
	}
	defer rows.Close()
	var out []stats.ErrorCount
	for rows.Next() {
		var e stats.ErrorCount
		if err := rows.Scan(&e.Error, &e.Count); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func scanStatsJob(row interface{ Scan(...any) error }) (stats.Record, error) {
	var (
		r                                                          stats.Record
		created, s1, s2s, s2d, s3, ended, durationSum, step2Closed int64
		outcome                                                    string
	)
	err := row.Scan(&r.JobID, &r.Tenant, &r.Type, &created, &s1, &s2s, &s2d, &s3, &ended, &outcome, &r.Total,
		&r.Step1Attempts, &r.Step3Attempts, &r.SubJobs, &r.SubJobAttempts, &r.Succeeded, &r.TimedOut, &r.Duplicates,
		&step2Closed, &r.Step2Succeeded, &r.Step2Failed, &r.Final.Total, &r.Final.Succeeded, &r.Final.Failed,
		&r.Final.Retries, &r.Final.TimedOut, &r.Final.Duplicates, &r.Final.Late, &durationSum, &r.Durations)
	if err != nil {
		return stats.Record{}, err
	}
	r.CreatedAt, r.Step1Done, r.Step2Start, r.Step2Done = utcMicros(created), utcMicros(s1), utcMicros(s2s), utcMicros(s2d)
	r.Step3Done, r.EndedAt = utcMicros(s3), utcMicros(ended)
	r.Outcome = stats.Outcome(outcome)
	r.Step2Closed = step2Closed != 0
	r.DurationSum = time.Duration(durationSum) * time.Microsecond
	return r, nil
}

func utcMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

// statsTx is one transaction of the statistics' store.
type statsTx struct {
	s  *StatsStore
	tx *PreparedTx
}

// statsBatch is the statistics' write-behind state in one SQL log batch (PostgreSQL, MySQL): every report
// of a job reads and rewrites the job's row and adds to one completions bucket, so inside a batch those
// two live in memory and are written once, just before the batch commits. The row lock taken by the
// batch's first read of a job is held until that commit.
type statsBatch struct {
	jobs        map[string]stats.Record
	dirty       map[string]bool
	completions map[completionBucket]int64
	buckets     []completionBucket // in first-added order, for a stable statement order
}

type completionBucket struct {
	jobID  string
	bucket int64
}

type statsBatchKey struct{}

// batch returns the batch event and the statistics' batch state, or nil outside an SQL log batch.
func (t statsTx) batch(ctx context.Context) (*batchEvent, *statsBatch) {
	ev := batchEventFrom(ctx)
	if ev == nil {
		return nil, nil
	}
	if b, ok := ev.outer.Value(statsBatchKey{}).(*statsBatch); ok {
		return ev, b
	}
	b := &statsBatch{jobs: map[string]stats.Record{}, dirty: map[string]bool{}, completions: map[completionBucket]int64{}}
	ev.outer.SetValue(statsBatchKey{}, b)
	flushCtx := context.WithoutCancel(ctx)
	outer := ev.outer
	outer.BeforeCommit(func() error {
		w := statsTx{s: t.s, tx: t.s.db.Prepared(outer.Tx)}
		for _, id := range slices.Sorted(maps.Keys(b.dirty)) {
			if err := w.writeJob(flushCtx, b.jobs[id]); err != nil {
				return err
			}
		}
		for _, k := range b.buckets {
			if _, err := w.tx.ExecContext(flushCtx, t.s.q.addCompletions, k.jobID, k.bucket, b.completions[k]); err != nil {
				return fmt.Errorf("count completions of job %s: %w", k.jobID, err)
			}
		}
		return nil
	})
	return ev, b
}

// LockJob implements stats.Tx. The job's row exists from its first event on, so the insert runs once
// per job.
func (t statsTx) LockJob(ctx context.Context, jobID string) (stats.Record, error) {
	if _, b := t.batch(ctx); b != nil {
		if r, ok := b.jobs[jobID]; ok {
			r.Durations = slices.Clone(r.Durations)
			return r, nil
		}
	}
	r, err := scanStatsJob(t.tx.QueryRowContext(ctx, t.s.q.job, jobID))
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := t.tx.ExecContext(ctx, t.s.q.createJob, jobID); err != nil {
			return stats.Record{}, fmt.Errorf("create statistics of job %s: %w", jobID, err)
		}
		r, err = scanStatsJob(t.tx.QueryRowContext(ctx, t.s.q.job, jobID))
	}
	if err != nil {
		return stats.Record{}, fmt.Errorf("read statistics of job %s: %w", jobID, err)
	}
	return r, nil
}

// SaveJob implements stats.Tx.
func (t statsTx) SaveJob(ctx context.Context, r stats.Record) error {
	if ev, b := t.batch(ctx); b != nil {
		r.Durations = slices.Clone(r.Durations)
		ev.onSuccess = append(ev.onSuccess, func() {
			b.jobs[r.JobID] = r
			b.dirty[r.JobID] = true
		})
		return nil
	}
	return t.writeJob(ctx, r)
}

func (t statsTx) writeJob(ctx context.Context, r stats.Record) error {
	f := r.Final
	_, err := t.tx.ExecContext(ctx, t.s.q.saveJob, r.Tenant, r.Type, micros(r.CreatedAt), micros(r.Step1Done),
		micros(r.Step2Start), micros(r.Step2Done), micros(r.Step3Done), micros(r.EndedAt), string(r.Outcome), r.Total,
		r.Step1Attempts, r.Step3Attempts, r.SubJobs, r.SubJobAttempts, r.Succeeded, r.TimedOut, r.Duplicates,
		flag(r.Step2Closed), r.Step2Succeeded, r.Step2Failed, f.Total, f.Succeeded, f.Failed, f.Retries, f.TimedOut,
		f.Duplicates, f.Late, r.DurationSum.Microseconds(), r.Durations, r.JobID)
	if err != nil {
		return fmt.Errorf("save statistics of job %s: %w", r.JobID, err)
	}
	return nil
}

// MarkEvent implements stats.Tx.
func (t statsTx) MarkEvent(ctx context.Context, jobID, eventID string) (bool, error) {
	res, err := t.tx.ExecContext(ctx, t.s.q.markEvent, jobID, eventID)
	if err != nil {
		return false, fmt.Errorf("record event %s: %w", eventID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// SubJob implements stats.Tx.
func (t statsTx) SubJob(ctx context.Context, jobID string, index int64) (stats.SubJobRecord, bool, error) {
	s := stats.SubJobRecord{JobID: jobID, Index: index}
	var at, d int64
	err := t.tx.QueryRowContext(ctx, t.s.q.subJob, jobID, index).Scan(&s.MaxAttempt, &s.SuccessAttempt, &at, &d)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return s, false, nil
	case err != nil:
		return s, false, fmt.Errorf("read sub-job %d of job %s: %w", index, jobID, err)
	}
	s.SuccessAt, s.SuccessDuration = utcMicros(at), time.Duration(d)*time.Microsecond
	return s, true, nil
}

// SaveSubJob implements stats.Tx.
func (t statsTx) SaveSubJob(ctx context.Context, s stats.SubJobRecord) error {
	_, err := t.tx.ExecContext(ctx, t.s.q.saveSubJob, s.JobID, s.Index, s.MaxAttempt, s.SuccessAttempt,
		micros(s.SuccessAt), s.SuccessDuration.Microseconds())
	if err != nil {
		return fmt.Errorf("save sub-job %d of job %s: %w", s.Index, s.JobID, err)
	}
	return nil
}

// Attempt implements stats.Tx.
func (t statsTx) Attempt(ctx context.Context, key stats.AttemptKey) (stats.AttemptRecord, bool, error) {
	a := stats.AttemptRecord{AttemptKey: key}
	var timedOut int64
	err := t.tx.QueryRowContext(ctx, t.s.q.attempt, key.JobID, key.Step, key.Index, key.Attempt).Scan(&a.Error, &timedOut)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return a, false, nil
	case err != nil:
		return a, false, fmt.Errorf("read attempt %+v: %w", key, err)
	}
	a.TimedOut = timedOut != 0
	return a, true, nil
}

// SaveAttempt implements stats.Tx.
func (t statsTx) SaveAttempt(ctx context.Context, a stats.AttemptRecord) error {
	_, err := t.tx.ExecContext(ctx, t.s.q.saveAttempt, a.JobID, a.Step, a.Index, a.Attempt, a.Error, flag(a.TimedOut))
	if err != nil {
		return fmt.Errorf("save attempt %+v: %w", a.AttemptKey, err)
	}
	return nil
}

// AddCompletions implements stats.Tx.
func (t statsTx) AddCompletions(ctx context.Context, jobID string, bucket time.Time, delta int64) error {
	if ev, b := t.batch(ctx); b != nil {
		k := completionBucket{jobID: jobID, bucket: micros(bucket)}
		ev.onSuccess = append(ev.onSuccess, func() {
			if _, ok := b.completions[k]; !ok {
				b.buckets = append(b.buckets, k)
			}
			b.completions[k] += delta
		})
		return nil
	}
	if _, err := t.tx.ExecContext(ctx, t.s.q.addCompletions, jobID, micros(bucket), delta); err != nil {
		return fmt.Errorf("count completions of job %s: %w", jobID, err)
	}
	return nil
}

// AddError implements stats.Tx.
func (t statsTx) AddError(ctx context.Context, jobID, text string, delta int64) error {
	if _, err := t.tx.ExecContext(ctx, t.s.q.addError, jobID, text, delta); err != nil {
		return fmt.Errorf("count errors of job %s: %w", jobID, err)
	}
	return nil
}

// JobErrors implements stats.Tx.
func (t statsTx) JobErrors(ctx context.Context, jobID string) ([]stats.ErrorCount, error) {
	rows, err := t.tx.QueryContext(ctx, t.s.q.jobErrors, jobID)
	if err != nil {
		return nil, fmt.Errorf("read errors of job %s: %w", jobID, err)
	}
	defer rows.Close()
	var out []stats.ErrorCount
	for rows.Next() {
		var e stats.ErrorCount
		if err := rows.Scan(&e.Error, &e.Count); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ReplaceErrors implements stats.Tx. It runs when a job ends with more error texts than it keeps, so at
// most once per job.
func (t statsTx) ReplaceErrors(ctx context.Context, jobID string, errs []stats.ErrorCount) error {
	if _, err := t.tx.ExecContext(ctx, t.s.q.deleteErrors, jobID); err != nil {
		return fmt.Errorf("replace errors of job %s: %w", jobID, err)
	}
	for _, e := range errs {
		if _, err := t.tx.ExecContext(ctx, t.s.q.insertError, jobID, e.Error, e.Count); err != nil {
			return fmt.Errorf("replace errors of job %s: %w", jobID, err)
		}
	}
	return nil
}

// DropBookkeeping implements stats.Tx.
func (t statsTx) DropBookkeeping(ctx context.Context, jobID string) error {
	for _, q := range []string{t.s.q.dropEvents, t.s.q.dropSubJobs, t.s.q.dropAttempts} {
		if _, err := t.tx.ExecContext(ctx, q, jobID); err != nil {
			return fmt.Errorf("drop the bookkeeping of job %s: %w", jobID, err)
		}
	}
	return nil
}
