package jobstore

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/pressly/goose/v3"

	"github.com/jobmill/jobmill/adapters/sqltx"
	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/job"
)

// Dialect names the SQL server a SQL store runs on.
type Dialect string

const (
	DialectPostgres Dialect = "postgres"
	// DialectMySQL covers MySQL 8 and MariaDB ≥ 10.6.
	DialectMySQL Dialect = "mysql"
)

//go:embed migrations/postgres/*.sql migrations/mysql/*.sql
var serverMigrations embed.FS

// TxPublisher returns a publisher that writes inside tx, so that what it publishes commits or rolls back
// with the state change (sqllog.NewTxPublisher, sqlqueue.NewTxPublisher, or a forwarder's envelope
// publisher on them).
type TxPublisher func(tx *sql.Tx) (message.Publisher, error)

// Outbox says where Tx.Publish writes: events go to messaging.EventsTopic through Events, commands to their
// work topics through Commands.
type Outbox struct {
	Events   TxPublisher
	Commands TxPublisher
}

// SQL is the job store on PostgreSQL or MySQL/MariaDB.
//
// An Update inside a message consumed from the SQL event log of the same database joins the log
// subscriber's batch transaction under a savepoint (see package sqltx): the consumer offset, the state
// change and the emitted events commit together. Any other Update is a READ COMMITTED transaction of its
// own; a message from a broker log is then consumed at least once, and a redelivery is absorbed by the
// domain's guarded transitions. Tx.Job locks the job row (SELECT … FOR UPDATE), and every reaction loads
// its job before changing anything, so two managers never interleave on one job; sub-job rows are only
// changed by reactions holding their job's lock (or inserted by step 1 before the job reads them).
type SQL struct {
	db      *sql.DB
	dialect Dialect
	outbox  Outbox
	logger  watermill.LoggerAdapter
	stmts   map[string]*sql.Stmt
	// projectionStmts are the read models' statements, prepared once per process.
	projectionStmts *stmtCache
}

var (
	_ job.Store         = (*SQL)(nil)
	_ access.TokenStore = (*SQL)(nil)
)

const (
	// addSubJobsChunk rows go in one multi-row INSERT (three parameters each, well under PostgreSQL's
	// 65,535); a chunk is also cut at addSubJobsMaxBytes of inputs to stay under MySQL's
	// max_allowed_packet (16 MiB by default).
	addSubJobsChunk    = 500
	addSubJobsMaxBytes = 4 << 20
)

// Statements of the hot path, written with ? and prepared once in the dialect's placeholder style.
const (
	sqJobForUpdate = `SELECT ` + jobColumns + ` FROM jobs WHERE id = ? FOR UPDATE`
	sqJobByKey     = `SELECT id FROM jobs WHERE tenant = ? AND idempotency_key = ?`
	// qSubJobBlock reads consecutive sub-jobs of a job into a batch (see sqlBatch).
	qSubJobBlock = `SELECT ` + subJobColumns + ` FROM subjobs WHERE job_id = ? AND idx >= ? AND idx < ?`
	sqInsertJob  = `INSERT INTO jobs (id, tenant, type, input, state, policy, seq, error, created_at, updated_at,
		deadline, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?)`
)

var sqlHotStatements = []string{qJob, sqJobForUpdate, qSubJob, qSubJobBlock, qSaveJob, qSaveSubJob, qPending, qSaveDispatched, qDue,
	qTokenByHash}

// NewSQL migrates the store's schema on db and returns the store. The schema (PostgreSQL) or database
// (MySQL) is the connection's current one, so a DSN chooses it (search_path, or the database name).
func NewSQL(ctx context.Context, db *sql.DB, dialect Dialect, outbox Outbox, logger watermill.LoggerAdapter) (*SQL, error) {
	if db == nil {
		return nil, errors.New("jobstore: nil DB")
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	var gooseDialect goose.Dialect
	switch dialect {
	case DialectPostgres:
		gooseDialect = goose.DialectPostgres
	case DialectMySQL:
		gooseDialect = goose.DialectMySQL
	default:
		return nil, fmt.Errorf("jobstore: unknown SQL dialect %q", dialect)
	}
	if err := migrateServer(ctx, db, dialect, gooseDialect); err != nil {
		return nil, fmt.Errorf("migrate %s job store: %w", dialect, err)
	}
	st := &SQL{db: db, dialect: dialect, outbox: outbox, logger: logger, stmts: map[string]*sql.Stmt{}, projectionStmts: newStmtCache(db)}
	prepare := append(append([]string{}, sqlHotStatements...), st.addSubJobsQuery(addSubJobsChunk))
	for _, q := range prepare {
		stmt, err := db.PrepareContext(ctx, st.rebind(q))
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("prepare job store statement: %w", err)
		}
		st.stmts[q] = stmt
	}
	return st, nil
}

// Close releases the prepared statements. The DB stays open; it belongs to the caller.
func (s *SQL) Close() error {
	err := s.projectionStmts.close()
	for _, stmt := range s.stmts {
		err = errors.Join(err, stmt.Close())
	}
	return err
}

// migrationLock is a server-wide lock id ("jobmill" in ASCII) that serialises migrations when several
// processes start at once; goose itself would let them race on the version table.
const migrationLock = 0x6a6f626d696c6c

// migrateServer runs the dialect's migrations while holding a session lock on a connection of its own.
func migrateServer(ctx context.Context, db *sql.DB, dialect Dialect, gooseDialect goose.Dialect) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	unlockCtx := context.WithoutCancel(ctx)
	switch dialect {
	case DialectPostgres:
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
		defer func() {
			if _, uerr := conn.ExecContext(unlockCtx, `SELECT pg_advisory_unlock($1)`, migrationLock); uerr != nil {
				err = errors.Join(err, uerr)
			}
		}()
	case DialectMySQL:
		// GET_LOCK names are server-wide; the database name keeps stores in different databases apart.
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT('jobmill_migrate.', DATABASE()), 60)`).Scan(&got); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
		if got.Int64 != 1 {
			return errors.New("lock migrations: timed out waiting for another process")
		}
		defer func() {
			if _, uerr := conn.ExecContext(unlockCtx, `SELECT RELEASE_LOCK(CONCAT('jobmill_migrate.', DATABASE()))`); uerr != nil {
				err = errors.Join(err, uerr)
			}
		}()
	}
	p, err := serverMigrationProvider(db, dialect, gooseDialect)
	if err != nil {
		return err
	}
	_, err = p.Up(ctx)
	return err
}

// serverMigrationProvider is the migration provider of the dialect's schema.
func serverMigrationProvider(db *sql.DB, dialect Dialect, gooseDialect goose.Dialect) (*goose.Provider, error) {
	return goose.NewProvider(gooseDialect, db, mustSub(serverMigrations, "migrations/"+string(dialect)),
		goose.WithTableName("jobmill_jobstore_version"))
}

// rebind turns ? placeholders into PostgreSQL's $n. The store's statements have no ? in literals.
func (s *SQL) rebind(q string) string {
	if s.dialect != DialectPostgres {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func (s *SQL) addSubJobsQuery(rows int) string {
	q := `INSERT INTO subjobs (job_id, idx, state, input, last_error) VALUES ` +
		strings.TrimSuffix(strings.Repeat(`(?, ?, 'PENDING', ?, ''),`, rows), ",")
	if s.dialect == DialectPostgres {
		return q + ` ON CONFLICT (job_id, idx) DO NOTHING`
	}
	// Not INSERT IGNORE: IGNORE also turns data errors (an over-long id, a truncated value) into warnings.
	return q + ` ON DUPLICATE KEY UPDATE idx = idx`
}

// Update runs fn in a transaction of its own, commits, then runs the AfterCommit callbacks. If fn fails
// (or panics) the transaction is rolled back and the callbacks are dropped.
func (s *SQL) Update(ctx context.Context, fn func(ctx context.Context, tx job.Tx) error) (err error) {
	if outer, ok := sqltx.FromContext(ctx, s.db); ok {
		// Inside a log subscriber's batch: reads come from the batch's memory where they can, writes and
		// messages are staged and flushed once, just before the batch commits with the consumed offsets
		// (see sqlBatch).
		view := &sqlTx{s: s, tx: outer.Tx, batch: s.batch(ctx, outer), update: &batchUpdate{savepoint: outer.LazySavepoint()}}
		if err := view.update.savepoint.End(ctx, fn(ctx, view)); err != nil {
			view.batch.forgetUnlocked()
			return err
		}
		view.batch.commit(view.update)
		for _, f := range view.after {
			outer.AfterCommit(f)
		}
		return nil
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return fmt.Errorf("begin job store transaction: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = tx.Rollback()
		}
	}()
	view := &sqlTx{s: s, tx: tx}
	if err := fn(ctx, view); err != nil {
		return err
	}
	done = true
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit job store transaction: %w", err)
	}
	for _, f := range view.after {
		f()
	}
	return nil
}

type sqlTx struct {
	s     *SQL
	tx    *sql.Tx
	after []func()
	// batch and update are set inside a log batch: writes are staged, not run (see sqlBatch).
	batch  *sqlBatch
	update *batchUpdate
}

var _ job.Tx = (*sqlTx)(nil)

func (t *sqlTx) stmt(ctx context.Context, q string) *sql.Stmt {
	return t.tx.StmtContext(ctx, t.s.stmts[q])
}

func (t *sqlTx) AfterCommit(fn func()) { t.after = append(t.after, fn) }

// Job loads the job and locks its row until the transaction ends.
func (t *sqlTx) Job(ctx context.Context, id string) (*job.Job, error) {
	if t.batch != nil {
		if j, ok := t.update.jobs[id]; ok {
			c := *j
			return &c, nil
		}
		if j, ok := t.batch.jobs[id]; ok {
			c := *j
			return &c, nil
		}
		if err := t.update.savepoint.Begin(ctx); err != nil {
			return nil, err
		}
	}
	return scanJob(t.stmt(ctx, sqJobForUpdate).QueryRowContext(ctx, id))
}

func (t *sqlTx) CreateJob(ctx context.Context, j *job.Job, idempotencyKey string) (string, error) {
	policy, err := json.Marshal(j.Policy)
	if err != nil {
		return "", err
	}
	args := []any{j.ID, j.Tenant, j.Type, j.Input, string(j.State), string(policy), j.Seq, micros(j.CreatedAt), micros(j.UpdatedAt),
		micros(j.Deadline)}
	if idempotencyKey == "" {
		if _, err := t.tx.ExecContext(ctx, t.s.rebind(sqInsertJob), append(args, nil)...); err != nil {
			return "", fmt.Errorf("insert job %s: %w", j.ID, err)
		}
		return "", nil
	}
	// A conflicting insert waits for the other submission to commit instead of failing, which in
	// PostgreSQL would abort this transaction; the key's owner is then read back.
	q := sqInsertJob + ` ON CONFLICT DO NOTHING`
	if t.s.dialect == DialectMySQL {
		q = sqInsertJob + ` ON DUPLICATE KEY UPDATE id = id`
	}
	if _, err := t.tx.ExecContext(ctx, t.s.rebind(q), append(args, idempotencyKey)...); err != nil {
		return "", fmt.Errorf("insert job %s: %w", j.ID, err)
	}
	var owner string
	err = t.tx.QueryRowContext(ctx, t.s.rebind(sqJobByKey), j.Tenant, idempotencyKey).Scan(&owner)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("insert job %s: a job with this id exists", j.ID)
	case err != nil:
		return "", fmt.Errorf("insert job %s: %w", j.ID, err)
	case owner != j.ID:
		return owner, job.ErrDuplicateSubmission
	}
	return "", nil
}

func (t *sqlTx) SaveJob(ctx context.Context, j *job.Job) error {
	if t.batch != nil {
		if t.update.jobs == nil {
			t.update.jobs = map[string]*job.Job{}
		}
		c := *j
		t.update.jobs[j.ID] = &c
		return nil
	}
	return t.writeJob(ctx, j)
}

func (t *sqlTx) writeJob(ctx context.Context, j *job.Job) error {
	_, err := t.stmt(ctx, qSaveJob).ExecContext(ctx, saveJobArgs(j)...)
	if err != nil {
		return fmt.Errorf("save job %s: %w", j.ID, err)
	}
	return nil
}

func (t *sqlTx) SubJob(ctx context.Context, jobID string, index int64) (*job.SubJob, error) {
	if t.batch != nil {
		if err := t.loadBlocks(ctx, jobID, index, index+1); err != nil {
			return nil, err
		}
		if sj, ok := t.batchSubJob(subJobKey{jobID, index}); ok {
			return sj, nil
		}
		return nil, job.ErrNotFound
	}
	return scanSubJob(t.stmt(ctx, qSubJob).QueryRowContext(ctx, jobID, index))
}

func (t *sqlTx) SaveSubJob(ctx context.Context, s *job.SubJob) error {
	if t.batch != nil {
		t.stageSubJob(s)
		return nil
	}
	_, err := t.stmt(ctx, qSaveSubJob).ExecContext(ctx,
		string(s.State), s.Attempt, s.Result, s.LastError, dueAt(s), micros(s.StartedAt), micros(s.FinishedAt), s.JobID, s.Index)
	if err != nil {
		return fmt.Errorf("save sub-job %d of job %s: %w", s.Index, s.JobID, err)
	}
	return nil
}

func (t *sqlTx) PendingSubJobs(ctx context.Context, jobID string, r job.Range) ([]*job.SubJob, error) {
	if t.batch != nil {
		if err := t.loadBlocks(ctx, jobID, r.From, r.To); err != nil {
			return nil, err
		}
		var out []*job.SubJob
		for i := r.From; i < r.To; i++ {
			if sj, ok := t.batchSubJob(subJobKey{jobID, i}); ok && sj.State == job.SubJobPending {
				out = append(out, sj)
			}
		}
		return out, nil
	}
	rows, err := t.stmt(ctx, qPending).QueryContext(ctx, jobID, r.From, r.To)
	if err != nil {
		return nil, err
	}
	return collectSubJobs(rows, int(r.Len()))
}

// SaveDispatched writes the first attempt of many sub-jobs, one range UPDATE per run of consecutive
// indexes that share a start time and deadline (as a dispatch window does).
func (t *sqlTx) SaveDispatched(ctx context.Context, subs []*job.SubJob) error {
	if t.batch != nil {
		for _, sj := range subs {
			t.stageSubJob(sj)
		}
		return nil
	}
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

func (t *sqlTx) DueSubJobs(ctx context.Context, jobID string, now time.Time, limit int) ([]*job.SubJob, error) {
	if t.batch != nil {
		// The query must see the batch's staged sub-jobs: write them first. Ticks are rare next to reports.
		if err := t.update.savepoint.Begin(ctx); err != nil {
			return nil, err
		}
		if err := t.s.writeSubJobs(ctx, t.tx, t.batch); err != nil {
			return nil, err
		}
	}
	rows, err := t.stmt(ctx, qDue).QueryContext(ctx, jobID, micros(now), limit)
	if err != nil {
		return nil, err
	}
	return collectSubJobs(rows, 0)
}

// Publish writes events and commands through the outbox publishers, inside this transaction (inside a
// log batch: when the batch commits).
func (t *sqlTx) Publish(ctx context.Context, fx job.Effects) error {
	var out outgoing
	if err := out.addEvents(fx.Events); err != nil {
		return err
	}
	if err := out.addCommands(fx.Commands); err != nil {
		return err
	}
	if t.batch != nil {
		t.update.out.merge(out)
		return nil
	}
	return t.publishMessages(ctx, out)
}

// AddSubJobs stores a batch of split sub-jobs in one transaction, with multi-row inserts; indexes already
// stored are left as they are.
func (s *SQL) AddSubJobs(ctx context.Context, jobID string, firstIndex int64, inputs [][]byte) error {
	if len(inputs) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	full := tx.StmtContext(ctx, s.stmts[s.addSubJobsQuery(addSubJobsChunk)])
	for start := 0; start < len(inputs); {
		end, size := start, 0
		for end < len(inputs) && end-start < addSubJobsChunk && (end == start || size+len(inputs[end]) <= addSubJobsMaxBytes) {
			size += len(inputs[end])
			end++
		}
		args := make([]any, 0, 3*(end-start))
		for i := start; i < end; i++ {
			args = append(args, jobID, firstIndex+int64(i), inputs[i])
		}
		if end-start == addSubJobsChunk {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, s.rebind(s.addSubJobsQuery(end-start)), args...)
		}
		if err != nil {
			return fmt.Errorf("store sub-jobs %d..%d of job %s: %w", firstIndex+int64(start), firstIndex+int64(end-1), jobID, err)
		}
		start = end
	}
	return tx.Commit()
}

func (s *SQL) GetJob(ctx context.Context, id string) (*job.Job, error) {
	if tx, ok := sqltx.FromContext(ctx, s.db); ok {
		// A handler inside a log batch (the notifier looks up a job's tenant) reads on the batch's
		// transaction: with a Kafka log every partition of every consumer group may hold an open batch,
		// and together they can hold the whole pool, so waiting for a second connection could wait
		// forever.
		return scanJob(tx.StmtContext(ctx, s.stmts[qJob]).QueryRowContext(ctx, id))
	}
	return scanJob(s.stmts[qJob].QueryRowContext(ctx, id))
}

func (s *SQL) ListJobs(ctx context.Context, f job.ListFilter) ([]*job.Job, error) {
	q, args := listJobsQuery(f)
	rows, err := s.db.QueryContext(ctx, s.rebind(q), args...)
	if err != nil {
		return nil, err
	}
	return collectJobs(rows)
}

func (s *SQL) DueJobs(ctx context.Context, now time.Time, afterID string, limit int) ([]string, error) {
	at := micros(now)
	rows, err := s.db.QueryContext(ctx, s.rebind(`SELECT id FROM jobs j
		WHERE state IN ('STEP1_RUNNING', 'STEP2_RUNNING', 'STEP3_RUNNING') AND id > ?
		AND ((step_attempt > 0 AND step_deadline <= ?)
		  OR (state = 'STEP2_RUNNING' AND EXISTS (SELECT 1 FROM subjobs s
		        WHERE s.job_id = j.id AND s.state IN ('RUNNING', 'RETRY_WAIT') AND s.due_at <= ?)))
		ORDER BY id LIMIT ?`), afterID, at, at, limit)
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

func (s *SQL) CountSubJobs(ctx context.Context, jobID string) (map[job.SubJobState]int64, error) {
	rows, err := s.db.QueryContext(ctx, s.rebind(`SELECT state, COUNT(*) FROM subjobs WHERE job_id = ? GROUP BY state`), jobID)
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

func (s *SQL) ForEachResult(ctx context.Context, jobID string, fn func(int64, []byte) error) error {
	// Paged by index so that a million results never sit in one open statement or in memory, and fn never
	// runs while a connection is held.
	const page = 1000
	q := s.rebind(`SELECT idx, result FROM subjobs WHERE job_id = ? AND idx > ? AND state = 'SUCCEEDED'
		ORDER BY idx LIMIT ?`)
	after := int64(-1)
	for {
		rows, err := s.db.QueryContext(ctx, q, jobID, after, page)
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

func (s *SQL) ListSubJobs(ctx context.Context, jobID string, state job.SubJobState, afterIndex int64, limit int) ([]*job.SubJob, error) {
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
	rows, err := s.db.QueryContext(ctx, s.rebind(q), args...)
	if err != nil {
		return nil, err
	}
	return collectSubJobs(rows, 0)
}
