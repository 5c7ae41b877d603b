package jobstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqltx"
	"github.com/jobmill/jobmill/app/job"
)

// sqlBatch is the write-behind state of one batch transaction of the SQL event log. The reactions of a
// batch read jobs and sub-jobs from memory and stage their writes and outgoing messages here; one flush
// just before the batch commits writes them with a handful of multi-row statements. A batch of 100
// completions then costs a few round trips instead of several per completion.
//
// Memory is the truth for the batch because every reaction holds its job's row lock (taken by the first
// load of the job in the batch, held until the commit), and sub-job rows only change under that lock.
type sqlBatch struct {
	jobs      map[string]*job.Job
	dirtyJobs map[string]bool
	// subs holds every sub-job row of the blocks in loaded, as loaded or as last staged.
	subs      map[subJobKey]*job.SubJob
	loaded    map[subJobBlock]bool
	dirtySubs map[subJobKey]bool
	out       outgoing
}

type subJobKey struct {
	jobID string
	index int64
}

// subJobBlock is subJobBlockSize consecutive indexes of one job, the unit sub-jobs are read in. Reports
// arrive roughly in dispatch order, so one block serves most of a batch's reports.
type subJobBlock struct {
	jobID string
	n     int64
}

const subJobBlockSize = 256

func blockOf(jobID string, index int64) subJobBlock {
	return subJobBlock{jobID: jobID, n: index / subJobBlockSize}
}

// outgoing is messages staged for the outbox, in publishing order.
type outgoing struct {
	events   []*message.Message
	topics   []string
	commands map[string][]*message.Message
}

func (o *outgoing) addEvents(events []job.Message) error {
	if len(events) == 0 {
		return nil
	}
	msgs, err := messaging.Encode(events)
	if err != nil {
		return err
	}
	o.events = append(o.events, msgs...)
	return nil
}

func (o *outgoing) addCommands(cmds []job.Message) error {
	if len(cmds) == 0 {
		return nil
	}
	topics, byTopic, err := messaging.GroupCommands(cmds)
	if err != nil {
		return err
	}
	for _, t := range topics {
		o.addTopic(t, byTopic[t])
	}
	return nil
}

func (o *outgoing) addTopic(topic string, msgs []*message.Message) {
	if o.commands == nil {
		o.commands = map[string][]*message.Message{}
	}
	if _, ok := o.commands[topic]; !ok {
		o.topics = append(o.topics, topic)
	}
	o.commands[topic] = append(o.commands[topic], msgs...)
}

func (o *outgoing) merge(from outgoing) {
	o.events = append(o.events, from.events...)
	for _, t := range from.topics {
		o.addTopic(t, from.commands[t])
	}
}

// batchUpdate is what one Update inside a batch staged; it joins the batch only if the Update succeeds.
type batchUpdate struct {
	jobs map[string]*job.Job
	subs map[subJobKey]*job.SubJob
	out  outgoing
	// savepoint is taken before the Update's first statement, so a failed read leaves the batch usable.
	savepoint *sqltx.Savepoint
}

// batch returns the write-behind state of a batch transaction, registering its flush on first use. The
// flush runs outside any Update, so a failed Update never drops it.
func (s *SQL) batch(ctx context.Context, outer *sqltx.Tx) *sqlBatch {
	if b, ok := outer.Value(sqlBatchKey{}).(*sqlBatch); ok {
		return b
	}
	b := &sqlBatch{
		jobs: map[string]*job.Job{}, dirtyJobs: map[string]bool{},
		subs: map[subJobKey]*job.SubJob{}, loaded: map[subJobBlock]bool{}, dirtySubs: map[subJobKey]bool{},
	}
	outer.SetValue(sqlBatchKey{}, b)
	flushCtx := context.WithoutCancel(ctx)
	outer.BeforeCommit(func() error { return s.flushBatch(flushCtx, outer, b) })
	return b
}

type sqlBatchKey struct{}

// commit adds a successful Update's staged writes to the batch.
func (b *sqlBatch) commit(u *batchUpdate) {
	for id, j := range u.jobs {
		b.jobs[id] = j
		b.dirtyJobs[id] = true
	}
	for k, sj := range u.subs {
		b.subs[k] = sj
		b.dirtySubs[k] = true
	}
	b.out.merge(u.out)
}

// forgetUnlocked drops the sub-jobs read for jobs the batch may not hold locked: a failed Update's
// savepoint rollback releases the job lock it took, and another transaction may then change those rows.
// Jobs the batch saved were locked by Updates that succeeded, and stay locked until the commit.
func (b *sqlBatch) forgetUnlocked() {
	for blk := range b.loaded {
		if _, locked := b.jobs[blk.jobID]; !locked {
			delete(b.loaded, blk)
		}
	}
	for k := range b.subs {
		if _, locked := b.jobs[k.jobID]; !locked && !b.dirtySubs[k] {
			delete(b.subs, k)
		}
	}
}

// flushBatch writes the batch's staged sub-jobs, jobs and messages, in that order.
func (s *SQL) flushBatch(ctx context.Context, outer *sqltx.Tx, b *sqlBatch) error {
	if err := s.writeSubJobs(ctx, outer.Tx, b); err != nil {
		return err
	}
	b.dirtySubs = map[subJobKey]bool{}
	view := &sqlTx{s: s, tx: outer.Tx}
	for _, id := range slices.Sorted(maps.Keys(b.dirtyJobs)) {
		if err := view.writeJob(ctx, b.jobs[id]); err != nil {
			return err
		}
	}
	b.dirtyJobs = map[string]bool{}
	out := b.out
	b.out = outgoing{}
	return view.publishMessages(ctx, out)
}

// writeSubJobs writes the dirty sub-jobs with multi-row statements, in key order (one lock order for
// every writer). They stay dirty: only the flush, which writes them last, clears the set.
func (s *SQL) writeSubJobs(ctx context.Context, tx *sql.Tx, b *sqlBatch) error {
	if len(b.dirtySubs) == 0 {
		return nil
	}
	keys := make([]subJobKey, 0, len(b.dirtySubs))
	for k := range b.dirtySubs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, c subJobKey) int {
		return cmp.Or(strings.Compare(a.jobID, c.jobID), cmp.Compare(a.index, c.index))
	})
	if s.dialect == DialectPostgres {
		return s.writeSubJobsPostgres(ctx, tx, b, keys)
	}
	for chunk := range slices.Chunk(keys, saveSubJobsChunk) {
		args := make([]any, 0, len(chunk)*10)
		for _, k := range chunk {
			sj := b.subs[k]
			args = append(args, sj.JobID, sj.Index, string(sj.State), sj.Attempt, sj.Input, // Input: only for the upsert's never-taken insert branch
				sj.Result, sj.LastError, dueAt(sj), micros(sj.StartedAt), micros(sj.FinishedAt))
		}
		if _, err := tx.ExecContext(ctx, s.saveSubJobsQuery(len(chunk)), args...); err != nil {
			return fmt.Errorf("save %d sub-jobs: %w", len(chunk), err)
		}
	}
	return nil
}

// saveSubJobsPostgres updates every staged sub-job with one statement whose columns travel as arrays:
// its text is the same whatever the row count, so the server parses and plans it once per connection
// (a VALUES list of N rows is a new statement for each N, and planning it cost more than running it).
const saveSubJobsPostgres = `UPDATE subjobs AS s SET state = v.state, attempt = v.attempt, result = v.result,
	last_error = v.last_error, due_at = v.due_at, started_at = v.started_at, finished_at = v.finished_at
	FROM unnest($1::text[], $2::bigint[], $3::text[], $4::integer[], $5::bytea[], $6::text[], $7::bigint[],
		$8::bigint[], $9::bigint[]) AS v (job_id, idx, state, attempt, result, last_error, due_at, started_at, finished_at)
	WHERE s.job_id = v.job_id AND s.idx = v.idx`

func (s *SQL) writeSubJobsPostgres(ctx context.Context, tx *sql.Tx, b *sqlBatch, keys []subJobKey) error {
	n := len(keys)
	jobIDs, states, lastErrors := make([]string, n), make([]string, n), make([]string, n)
	indexes, dues, started, finished := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	attempts, results := make([]int32, n), make([][]byte, n)
	for i, k := range keys {
		sj := b.subs[k]
		jobIDs[i], indexes[i], states[i], attempts[i] = sj.JobID, sj.Index, string(sj.State), int32(sj.Attempt)
		results[i], lastErrors[i], dues[i] = sj.Result, sj.LastError, dueAt(sj)
		started[i], finished[i] = micros(sj.StartedAt), micros(sj.FinishedAt)
	}
	if _, err := tx.ExecContext(ctx, saveSubJobsPostgres, jobIDs, indexes, states, attempts, results, lastErrors, dues, started, finished); err != nil {
		return fmt.Errorf("save %d sub-jobs: %w", n, err)
	}
	return nil
}

// saveSubJobsChunk rows go in one statement (nine or ten parameters each).
const saveSubJobsChunk = 500

// saveSubJobsQuery updates rows existing sub-job rows in one statement on MySQL. Every row is known to
// exist (the batch loaded it), so the upsert never inserts.
func (s *SQL) saveSubJobsQuery(rows int) string {
	return `INSERT INTO subjobs (` + subJobColumns + `) VALUES ` +
		strings.TrimSuffix(strings.Repeat(`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?),`, rows), ",") +
		` ON DUPLICATE KEY UPDATE state = VALUES(state), attempt = VALUES(attempt), result = VALUES(result),
			last_error = VALUES(last_error), due_at = VALUES(due_at), started_at = VALUES(started_at),
			finished_at = VALUES(finished_at)`
}

// loadBlocks reads the blocks of job covering indexes [from, to) that the batch has not read yet, with
// one query per run of missing blocks.
func (t *sqlTx) loadBlocks(ctx context.Context, jobID string, from, to int64) error {
	if to <= from {
		return nil
	}
	first, last := blockOf(jobID, from).n, blockOf(jobID, to-1).n
	for n := first; n <= last; {
		if t.batch.loaded[subJobBlock{jobID, n}] {
			n++
			continue
		}
		end := n
		for end+1 <= last && !t.batch.loaded[subJobBlock{jobID, end + 1}] {
			end++
		}
		if err := t.update.savepoint.Begin(ctx); err != nil {
			return err
		}
		rows, err := t.stmt(ctx, qSubJobBlock).QueryContext(ctx, jobID, n*subJobBlockSize, (end+1)*subJobBlockSize)
		if err != nil {
			return fmt.Errorf("read sub-jobs of job %s: %w", jobID, err)
		}
		subs, err := collectSubJobs(rows, int(end-n+1)*subJobBlockSize)
		if err != nil {
			return fmt.Errorf("read sub-jobs of job %s: %w", jobID, err)
		}
		for _, sj := range subs {
			k := subJobKey{jobID, sj.Index}
			// A row staged by this batch is newer than the database's.
			if _, staged := t.batch.dirtySubs[k]; !staged {
				t.batch.subs[k] = sj
			}
		}
		for b := n; b <= end; b++ {
			t.batch.loaded[subJobBlock{jobID, b}] = true
		}
		n = end + 1
	}
	return nil
}

// batchSubJob returns a copy of a sub-job as this Update sees it.
func (t *sqlTx) batchSubJob(k subJobKey) (*job.SubJob, bool) {
	if sj, ok := t.update.subs[k]; ok {
		c := *sj
		return &c, true
	}
	if sj, ok := t.batch.subs[k]; ok {
		c := *sj
		return &c, true
	}
	return nil, false
}

func (t *sqlTx) stageSubJob(s *job.SubJob) {
	if t.update.subs == nil {
		t.update.subs = map[subJobKey]*job.SubJob{}
	}
	c := *s
	t.update.subs[subJobKey{s.JobID, s.Index}] = &c
}

// publishMessages writes staged messages through the outbox publishers, events first.
func (t *sqlTx) publishMessages(ctx context.Context, out outgoing) error {
	if len(out.events) > 0 {
		if t.s.outbox.Events == nil {
			return errors.New("jobstore: no outbox publisher for events")
		}
		pub, err := t.s.outbox.Events(t.tx)
		if err != nil {
			return fmt.Errorf("outbox events publisher: %w", err)
		}
		for chunk := range slices.Chunk(out.events, publishChunk) {
			if err := pub.Publish(messaging.EventsTopic, withContext(ctx, chunk)...); err != nil {
				return fmt.Errorf("publish %d events: %w", len(chunk), err)
			}
		}
	}
	if len(out.topics) > 0 {
		if t.s.outbox.Commands == nil {
			return errors.New("jobstore: no outbox publisher for commands")
		}
		pub, err := t.s.outbox.Commands(t.tx)
		if err != nil {
			return fmt.Errorf("outbox commands publisher: %w", err)
		}
		for _, topic := range out.topics {
			for chunk := range slices.Chunk(out.commands[topic], publishChunk) {
				if err := pub.Publish(topic, withContext(ctx, chunk)...); err != nil {
					return fmt.Errorf("send %d commands to %s: %w", len(chunk), topic, err)
				}
			}
		}
	}
	return nil
}

// publishChunk messages go in one Publish call: a batch can emit thousands, and an outbox publisher
// writes one statement per call with several parameters per message.
const publishChunk = 1000
