// Package jobstore is the job store on SQL: jobs, sub-jobs, and the outbox that commits emitted messages
// with the state change. The embedded default runs it on the same SQLite file as the transport, so the
// outbox is the transport's own tables.
package jobstore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/pressly/goose/v3"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/job"
)

//go:embed migrations/*.sql
var migrations embed.FS

// SQLite is the job store on the embedded SQLite database.
type SQLite struct {
	db     *sqlite.DB
	logger watermill.LoggerAdapter
	stmts  map[string]*sql.Stmt
	outbox SQLiteOutbox
	// tokenByHash runs on the read pool: every authenticated API request looks its token up.
	tokenByHash *sql.Stmt
	// projectionStmts are the read models' statements, prepared on the write connection.
	projectionStmts *stmtCache
}

// Statements of the hot path, prepared once on the write connection: SQLite parses a statement on every
// unprepared call, and parsing cost more than executing in the fan-in.
const (
	qJob     = `SELECT ` + jobColumns + ` FROM jobs WHERE id = ?`
	qSubJob  = `SELECT ` + subJobColumns + ` FROM subjobs WHERE job_id = ? AND idx = ?`
	qSaveJob = `UPDATE jobs SET state = ?, seq = ?, total = ?, next_index = ?, in_flight = ?,
		succeeded = ?, failed = ?, retries = ?, timed_out = ?, duplicates = ?, late = ?, step_attempt = ?,
		step_deadline = ?, output = ?, error = ?, updated_at = ?, s1_started_at = ?, s1_finished_at = ?,
		s2_started_at = ?, s2_finished_at = ?, s3_started_at = ?, s3_finished_at = ?, ended_at = ?, deadline = ?
		WHERE id = ?`
	qSaveSubJob = `UPDATE subjobs SET state = ?, attempt = ?, result = ?, last_error = ?, due_at = ?,
		started_at = ?, finished_at = ? WHERE job_id = ? AND idx = ?`
	qPending = `SELECT ` + subJobColumns + ` FROM subjobs
		WHERE job_id = ? AND idx >= ? AND idx < ? AND state = 'PENDING' ORDER BY idx`
	qSaveDispatched = `UPDATE subjobs SET state = ?, attempt = ?, due_at = ?, started_at = ?
		WHERE job_id = ? AND idx >= ? AND idx <= ? AND state = 'PENDING'`
	qDue = `SELECT ` + subJobColumns + ` FROM subjobs
		WHERE job_id = ? AND state IN ('RUNNING', 'RETRY_WAIT') AND due_at <= ? ORDER BY due_at LIMIT ?`
	qAddSubJob = `INSERT INTO subjobs (job_id, idx, state, input) VALUES (?, ?, 'PENDING', ?)
		ON CONFLICT (job_id, idx) DO NOTHING`
)

var hotStatements = []string{qJob, qSubJob, qSaveJob, qSaveSubJob, qPending, qSaveDispatched, qDue, qAddSubJob}

var (
	_ job.Store         = (*SQLite)(nil)
	_ access.TokenStore = (*SQLite)(nil)
)

// NewSQLite migrates the schema and returns the store.
func NewSQLite(ctx context.Context, db *sqlite.DB, logger watermill.LoggerAdapter) (*SQLite, error) {
	return NewSQLiteWithOutbox(ctx, db, SQLiteOutbox{}, logger)
}

// SQLiteTxPublisher makes a publisher that writes inside an SQLite transaction.
type SQLiteTxPublisher func(tx *sqlite.HookTx) (message.Publisher, error)

// SQLiteOutbox says where the store's transactions put emitted events and commands. Zero fields mean
// the SQLite event log and work queue in the same file; with a broker transport they are the outbox
// table that a relay forwards.
type SQLiteOutbox struct{ Events, Commands SQLiteTxPublisher }

// NewSQLiteWithOutbox is NewSQLite with the emitted messages going to outbox.
func NewSQLiteWithOutbox(ctx context.Context, db *sqlite.DB, outbox SQLiteOutbox, logger watermill.LoggerAdapter) (*SQLite, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	if err := migrate(ctx, db.Write); err != nil {
		return nil, fmt.Errorf("migrate job store %s: %w", db.Path, err)
	}
	if outbox.Events == nil {
		outbox.Events = func(tx *sqlite.HookTx) (message.Publisher, error) { return sqlite.NewTxLogPublisher(tx, logger) }
	}
	if outbox.Commands == nil {
		outbox.Commands = func(tx *sqlite.HookTx) (message.Publisher, error) { return sqlite.NewTxQueuePublisher(tx), nil }
	}
	st := &SQLite{db: db, logger: logger, stmts: map[string]*sql.Stmt{}, outbox: outbox, projectionStmts: newStmtCache(db.Write)}
	for _, q := range hotStatements {
		stmt, err := db.Write.PrepareContext(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("prepare job store statement: %w", err)
		}
		st.stmts[q] = stmt
	}
	var err error
	if st.tokenByHash, err = db.Read.PrepareContext(ctx, qTokenByHash); err != nil {
		return nil, fmt.Errorf("prepare job store statement: %w", err)
	}
	return st, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	p, err := sqliteMigrations(db)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// sqliteMigrations is the migration provider of the SQLite schema.
func sqliteMigrations(db *sql.DB) (*goose.Provider, error) {
	return goose.NewProvider(goose.DialectSQLite3, db, mustSub(migrations, "migrations"))
}

// Update runs fn in one write transaction, joining the log subscriber's transaction when ctx carries one.
//
// Inside a joined transaction (a batch of up to a hundred events of the log), job rows are written once,
// just before the batch commits, instead of once per event: the fan-in of a batch of completions then
// costs one job-row write. The batch's cache holds each job as of the last successful Update; an Update
// that fails leaves it untouched, matching its rolled-back savepoint.
func (s *SQLite) Update(ctx context.Context, fn func(ctx context.Context, tx job.Tx) error) error {
	var cache *jobCache
	if outer, ok := sqlite.TxFromContext(ctx); ok {
		cache = s.batchCache(ctx, outer)
	}
	var view *sqliteTx
	err := s.db.InTx(ctx, func(htx *sqlite.HookTx) error {
		view = &sqliteTx{htx: htx, tx: htx.SQL(), logger: s.logger, stmts: s.stmts, cache: cache, outbox: s.outbox}
		return fn(ctx, view)
	})
	if err == nil && cache != nil {
		for id, j := range view.staged {
			cache.jobs[id] = j
			cache.dirty[id] = true
		}
	}
	return err
}

// jobCache holds the jobs of one batch transaction.
type jobCache struct {
	jobs  map[string]*job.Job
	dirty map[string]bool
}

type jobCacheKey struct{}

// batchCache returns the job cache of a batch transaction, registering its flush on first use. It runs
// outside Update's savepoint so that the flush is never dropped with a failed Update.
func (s *SQLite) batchCache(ctx context.Context, outer *sqlite.HookTx) *jobCache {
	if c, ok := outer.Value(jobCacheKey{}).(*jobCache); ok {
		return c
	}
	c := &jobCache{jobs: map[string]*job.Job{}, dirty: map[string]bool{}}
	outer.SetValue(jobCacheKey{}, c)
	flushCtx := context.WithoutCancel(ctx)
	outer.BeforeCommit(func() error {
		view := &sqliteTx{htx: outer, tx: outer.SQL(), logger: s.logger, stmts: s.stmts}
		for id := range c.dirty {
			if err := view.writeJob(flushCtx, c.jobs[id]); err != nil {
				return err
			}
		}
		return nil
	})
	return c
}

type sqliteTx struct {
	htx    *sqlite.HookTx
	tx     *sql.Tx
	logger watermill.LoggerAdapter
	stmts  map[string]*sql.Stmt
	// cache and staged implement write-behind of job rows in batch transactions (nil cache: write-through).
	cache  *jobCache
	staged map[string]*job.Job
	outbox SQLiteOutbox
}

// stmt returns the prepared statement for q bound to this transaction.
func (t *sqliteTx) stmt(ctx context.Context, q string) *sql.Stmt {
	return t.tx.StmtContext(ctx, t.stmts[q])
}

func (t *sqliteTx) AfterCommit(fn func()) { t.htx.AfterCommit(fn) }

const jobColumns = `id, tenant, type, input, state, policy, seq, total, next_index, in_flight, succeeded, failed,
	retries, timed_out, duplicates, late, step_attempt, step_deadline, output, error, created_at, updated_at,
	s1_started_at, s1_finished_at, s2_started_at, s2_finished_at, s3_started_at, s3_finished_at, ended_at, deadline`

type scanner interface{ Scan(dest ...any) error }

func scanJob(row scanner) (*job.Job, error) {
	var j job.Job
	var state, policy string
	var stepDeadline, created, updated, ended, deadline int64
	var steps [6]int64
	err := row.Scan(&j.ID, &j.Tenant, &j.Type, &j.Input, &state, &policy, &j.Seq, &j.Total, &j.NextIndex, &j.InFlight,
		&j.Succeeded, &j.Failed, &j.Retries, &j.TimedOut, &j.Duplicates, &j.Late, &j.StepAttempt, &stepDeadline,
		&j.Output, &j.Error, &created, &updated, &steps[0], &steps[1], &steps[2], &steps[3], &steps[4], &steps[5], &ended,
		&deadline)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, job.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if j.State, err = job.ParseState(state); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(policy), &j.Policy); err != nil {
		return nil, fmt.Errorf("job %s: policy: %w", j.ID, err)
	}
	j.StepDeadline, j.CreatedAt, j.UpdatedAt, j.EndedAt = fromMicros(stepDeadline), fromMicros(created), fromMicros(updated), fromMicros(ended)
	j.Deadline = fromMicros(deadline)
	for i := range j.Steps {
		j.Steps[i] = job.StepTimes{StartedAt: fromMicros(steps[2*i]), FinishedAt: fromMicros(steps[2*i+1])}
	}
	return &j, nil
}

func (t *sqliteTx) Job(ctx context.Context, id string) (*job.Job, error) {
	if t.cache != nil {
		if j, ok := t.staged[id]; ok {
			c := *j
			return &c, nil
		}
		if j, ok := t.cache.jobs[id]; ok {
			c := *j
			return &c, nil
		}
	}
	return scanJob(t.stmt(ctx, qJob).QueryRowContext(ctx, id))
}

func (t *sqliteTx) CreateJob(ctx context.Context, j *job.Job, idempotencyKey string) (string, error) {
	if idempotencyKey != "" {
		var existing string
		err := t.tx.QueryRowContext(ctx, `SELECT id FROM jobs WHERE tenant = ? AND idempotency_key = ?`, j.Tenant, idempotencyKey).Scan(&existing)
		if err == nil {
			return existing, job.ErrDuplicateSubmission
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", err
		}
	}
	policy, err := json.Marshal(j.Policy)
	if err != nil {
		return "", err
	}
	var key any
	if idempotencyKey != "" {
		key = idempotencyKey
	}
	_, err = t.tx.ExecContext(ctx, `INSERT INTO jobs (id, tenant, type, input, state, policy, seq, created_at, updated_at,
		deadline, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		j.ID, j.Tenant, j.Type, j.Input, string(j.State), string(policy), j.Seq, micros(j.CreatedAt), micros(j.UpdatedAt),
		micros(j.Deadline), key)
	if err != nil {
		return "", fmt.Errorf("insert job %s: %w", j.ID, err)
	}
	return "", nil
}

func (t *sqliteTx) SaveJob(ctx context.Context, j *job.Job) error {
	if t.cache != nil {
		if t.staged == nil {
			t.staged = map[string]*job.Job{}
		}
		c := *j
		t.staged[j.ID] = &c
		return nil
	}
	return t.writeJob(ctx, j)
}

func (t *sqliteTx) writeJob(ctx context.Context, j *job.Job) error {
	_, err := t.stmt(ctx, qSaveJob).ExecContext(ctx, saveJobArgs(j)...)
	if err != nil {
		return fmt.Errorf("save job %s: %w", j.ID, err)
	}
	return nil
}

// saveJobArgs are the arguments of qSaveJob.
func saveJobArgs(j *job.Job) []any {
	return []any{
		string(j.State), j.Seq, j.Total, j.NextIndex, j.InFlight, j.Succeeded, j.Failed, j.Retries, j.TimedOut,
		j.Duplicates, j.Late, j.StepAttempt, micros(j.StepDeadline), j.Output, j.Error, micros(j.UpdatedAt),
		micros(j.Steps[0].StartedAt), micros(j.Steps[0].FinishedAt), micros(j.Steps[1].StartedAt),
		micros(j.Steps[1].FinishedAt), micros(j.Steps[2].StartedAt), micros(j.Steps[2].FinishedAt),
		micros(j.EndedAt), micros(j.Deadline), j.ID,
	}
}

const subJobColumns = `job_id, idx, state, attempt, input, result, last_error, due_at, started_at, finished_at`

func scanSubJob(row scanner) (*job.SubJob, error) {
	var s job.SubJob
	var state string
	var due, started, finished int64
	err := row.Scan(&s.JobID, &s.Index, &state, &s.Attempt, &s.Input, &s.Result, &s.LastError, &due, &started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, job.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if s.State, err = job.ParseSubJobState(state); err != nil {
		return nil, err
	}
	switch s.State {
	case job.SubJobRunning:
		s.Deadline = fromMicros(due)
	case job.SubJobRetryWait:
		s.NextAttemptAt = fromMicros(due)
	}
	s.StartedAt, s.FinishedAt = fromMicros(started), fromMicros(finished)
	return &s, nil
}

func dueAt(s *job.SubJob) int64 {
	switch s.State {
	case job.SubJobRunning:
		return micros(s.Deadline)
	case job.SubJobRetryWait:
		return micros(s.NextAttemptAt)
	}
	return 0
}

func (t *sqliteTx) SubJob(ctx context.Context, jobID string, index int64) (*job.SubJob, error) {
	return scanSubJob(t.stmt(ctx, qSubJob).QueryRowContext(ctx, jobID, index))
}

func (t *sqliteTx) SaveSubJob(ctx context.Context, s *job.SubJob) error {
	_, err := t.stmt(ctx, qSaveSubJob).ExecContext(ctx,
		string(s.State), s.Attempt, s.Result, s.LastError, dueAt(s), micros(s.StartedAt), micros(s.FinishedAt), s.JobID, s.Index)
	if err != nil {
		return fmt.Errorf("save sub-job %d of job %s: %w", s.Index, s.JobID, err)
	}
	return nil
}

func (t *sqliteTx) PendingSubJobs(ctx context.Context, jobID string, r job.Range) ([]*job.SubJob, error) {
	rows, err := t.stmt(ctx, qPending).QueryContext(ctx, jobID, r.From, r.To)
	if err != nil {
		return nil, err
	}
	return collectSubJobs(rows, int(r.Len()))
}

func collectSubJobs(rows *sql.Rows, sizeHint int) ([]*job.SubJob, error) {
	defer rows.Close()
	out := make([]*job.SubJob, 0, sizeHint)
	for rows.Next() {
		s, err := scanSubJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// SaveDispatched writes the first attempt of many sub-jobs. Dispatch gives them one start time and one
// deadline, so consecutive indexes are written with one range UPDATE.
func (t *sqliteTx) SaveDispatched(ctx context.Context, subs []*job.SubJob) error {
	for start := 0; start < len(subs); {
		end := start + 1
		for end < len(subs) && subs[end].Index == subs[end-1].Index+1 && sameDispatch(subs[end], subs[start]) {
			end++
		}
		first, last := subs[start], subs[end-1]
		_, err := t.stmt(ctx, qSaveDispatched).ExecContext(ctx,
			string(first.State), first.Attempt, dueAt(first), micros(first.StartedAt), first.JobID, first.Index, last.Index)
		if err != nil {
			return fmt.Errorf("dispatch sub-jobs %d..%d of job %s: %w", first.Index, last.Index, first.JobID, err)
		}
		start = end
	}
	return nil
}

func sameDispatch(a, b *job.SubJob) bool {
	return a.State == b.State && a.Attempt == b.Attempt && a.Deadline.Equal(b.Deadline) && a.StartedAt.Equal(b.StartedAt)
}

func (t *sqliteTx) DueSubJobs(ctx context.Context, jobID string, now time.Time, limit int) ([]*job.SubJob, error) {
	rows, err := t.stmt(ctx, qDue).QueryContext(ctx,
		jobID, micros(now), limit)
	if err != nil {
		return nil, err
	}
	return collectSubJobs(rows, 0)
}

func (t *sqliteTx) Publish(ctx context.Context, fx job.Effects) error {
	if len(fx.Events) > 0 {
		msgs, err := messaging.Encode(fx.Events)
		if err != nil {
			return err
		}
		pub, err := t.outbox.Events(t.htx)
		if err != nil {
			return err
		}
		if err := pub.Publish(messaging.EventsTopic, withContext(ctx, msgs)...); err != nil {
			return fmt.Errorf("publish %d events: %w", len(msgs), err)
		}
	}
	if len(fx.Commands) > 0 {
		topics, byTopic, err := messaging.GroupCommands(fx.Commands)
		if err != nil {
			return err
		}
		pub, err := t.outbox.Commands(t.htx)
		if err != nil {
			return err
		}
		for _, topic := range topics {
			if err := pub.Publish(topic, withContext(ctx, byTopic[topic])...); err != nil {
				return fmt.Errorf("send %d commands to %s: %w", len(byTopic[topic]), topic, err)
			}
		}
	}
	return nil
}

func withContext(ctx context.Context, msgs []*message.Message) []*message.Message {
	for _, m := range msgs {
		m.SetContext(ctx)
	}
	return msgs
}

// AddSubJobs stores a batch of split sub-jobs; indexes already stored are left as they are.
func (s *SQLite) AddSubJobs(ctx context.Context, jobID string, firstIndex int64, inputs [][]byte) error {
	if len(inputs) == 0 {
		return nil
	}
	return s.db.InTx(ctx, func(htx *sqlite.HookTx) error {
		stmt := htx.SQL().StmtContext(ctx, s.stmts[qAddSubJob])
		for i, in := range inputs {
			if _, err := stmt.ExecContext(ctx, jobID, firstIndex+int64(i), in); err != nil {
				return fmt.Errorf("store sub-job %d of job %s: %w", firstIndex+int64(i), jobID, err)
			}
		}
		return nil
	})
}

func (s *SQLite) GetJob(ctx context.Context, id string) (*job.Job, error) {
	return scanJob(s.db.Read.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM jobs WHERE id = ?`, id))
}

func (s *SQLite) ListJobs(ctx context.Context, f job.ListFilter) ([]*job.Job, error) {
	q, args := listJobsQuery(f)
	rows, err := s.db.Read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collectJobs(rows)
}

// listJobsQuery is ListJobs' query, with ? placeholders, and its arguments.
func listJobsQuery(f job.ListFilter) (string, []any) {
	var where []string
	var args []any
	if f.Tenant != "" {
		where, args = append(where, "tenant = ?"), append(args, f.Tenant)
	}
	if f.Type != "" {
		where, args = append(where, "type = ?"), append(args, f.Type)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(", ?", len(f.States)-1)+")")
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	// Creation times are stored in whole microseconds, so comparing with a bound rounded up to the next
	// microsecond is exact for both the inclusive and the exclusive bound.
	if !f.CreatedAfter.IsZero() {
		where, args = append(where, "created_at >= ?"), append(args, ceilMicros(f.CreatedAfter))
	}
	if !f.CreatedBefore.IsZero() {
		where, args = append(where, "created_at < ?"), append(args, ceilMicros(f.CreatedBefore))
	}
	if f.AfterID != "" {
		where, args = append(where, "id > ?"), append(args, f.AfterID)
	}
	q := `SELECT ` + jobColumns + ` FROM jobs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	return q + " ORDER BY id LIMIT ?", append(args, limit)
}

func collectJobs(rows *sql.Rows) ([]*job.Job, error) {
	defer rows.Close()
	var out []*job.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func (s *SQLite) DueJobs(ctx context.Context, now time.Time, afterID string, limit int) ([]string, error) {
	at := micros(now)
	rows, err := s.db.Read.QueryContext(ctx, `SELECT id FROM jobs j
		WHERE state IN ('STEP1_RUNNING', 'STEP2_RUNNING', 'STEP3_RUNNING') AND id > ?
		AND ((step_attempt > 0 AND step_deadline <= ?)
		  OR (state = 'STEP2_RUNNING' AND EXISTS (SELECT 1 FROM subjobs s
		        WHERE s.job_id = j.id AND s.state IN ('RUNNING', 'RETRY_WAIT') AND s.due_at <= ?)))
		ORDER BY id LIMIT ?`, afterID, at, at, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (s *SQLite) CountSubJobs(ctx context.Context, jobID string) (map[job.SubJobState]int64, error) {
	rows, err := s.db.Read.QueryContext(ctx, `SELECT state, COUNT(*) FROM subjobs WHERE job_id = ? GROUP BY state`, jobID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[job.SubJobState]int64{}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		state, err := job.ParseSubJobState(st)
		if err != nil {
			return nil, err
		}
		out[state] = n
	}
	return out, rows.Err()
}

func (s *SQLite) ForEachResult(ctx context.Context, jobID string, fn func(int64, []byte) error) error {
	// Paged by index so that a million results never sit in one open read transaction or in memory.
	const page = 1000
	after := int64(-1)
	for {
		rows, err := s.db.Read.QueryContext(ctx, `SELECT idx, result FROM subjobs WHERE job_id = ? AND idx > ? AND state = 'SUCCEEDED'
			ORDER BY idx LIMIT ?`, jobID, after, page)
		if err != nil {
			return err
		}
		type item struct {
			idx    int64
			result []byte
		}
		var items []item
		for rows.Next() {
			var it item
			if err := rows.Scan(&it.idx, &it.result); err != nil {
				rows.Close()
				return err
			}
			items = append(items, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, it := range items {
			if err := fn(it.idx, it.result); err != nil {
				return err
			}
			after = it.idx
		}
		if len(items) < page {
			return nil
		}
	}
}

func (s *SQLite) ListSubJobs(ctx context.Context, jobID string, state job.SubJobState, afterIndex int64, limit int) ([]*job.SubJob, error) {
	q := `SELECT job_id, idx, state, attempt, NULL, NULL, last_error, due_at, started_at, finished_at FROM subjobs
		WHERE job_id = ? AND idx > ?`
	args := []any{jobID, afterIndex}
	if state != "" {
		q, args = q+" AND state = ?", append(args, string(state))
	}
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	q, args = q+" ORDER BY idx LIMIT ?", append(args, limit)
	rows, err := s.db.Read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return collectSubJobs(rows, 0)
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// ceilMicros is t in unix microseconds, rounded up.
func ceilMicros(t time.Time) int64 {
	us := t.UnixMicro()
	if t.Nanosecond()%1000 != 0 {
		us++
	}
	return us
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us)
}
