package engine_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"go.uber.org/goleak"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/sqlite"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/ports/router"
)

// openSide opens a second handle on a service's database, as another process would.
func openSide(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s", what, waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func rawMessage(payload, name string) *message.Message {
	m := message.NewMessage(watermill.NewUUID(), []byte(payload))
	if name != "" {
		m.Metadata.Set("name", name)
	}
	return m
}

// 6. Messages that can never be processed go to the poison topic with the reason, are acked, and do not
// stop the engine from running the jobs behind them.
func TestMalformedMessagesGoToPoison(t *testing.T) {
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "plain",
		Split: splitN,
		SubJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			rec.record(sc.IdempotencyKey, sc.Attempt)
			return nil, nil
		},
		Step3: checkingStep3(rec, nil),
	})
	path := newPath(t)
	e := startEngine(t, path, types, nil)
	side := openSide(t, path)
	logPub, err := sqlite.NewLogPublisher(side, nil)
	if err != nil {
		t.Fatal(err)
	}
	queuePub := sqlite.NewQueuePublisher(side)

	type bad struct {
		msg        *message.Message
		topic      string
		reasonHint string
	}
	bads := []bad{
		{rawMessage("not json", "Step2SubjobsReported"), messaging.EventsTopic, "cannot decode"},
		{rawMessage(`{"job_id":"j1","index":1}`, ""), messaging.EventsTopic, "no message name"},
		{rawMessage(`{"job_id":"j1"}`, "Bogus"), messaging.EventsTopic, "unknown message name"},
		{rawMessage(`{"completed":[{"index":1,"attempt":1}]}`, "Step2SubjobsReported"), messaging.EventsTopic, "job id"},
		{rawMessage("\x00garbage", "RunSubJobs"), messaging.WorkTopic("RunSubJobs"), "cannot decode"},
		{rawMessage(`{"job_id":"j1"}`, "Bogus"), messaging.WorkTopic("RunStep1"), "unknown message name"},
	}
	for _, b := range bads {
		var err error
		if strings.HasPrefix(b.topic, messaging.WorkTopicPrefix) {
			err = queuePub.Publish(b.topic, b.msg)
		} else {
			err = logPub.Publish(b.topic, b.msg)
		}
		if err != nil {
			t.Fatalf("publish %s on %s: %v", b.msg.UUID, b.topic, err)
		}
	}

	// The engine runs a job submitted after them.
	id := e.submit("", "plain", countInput{N: 50})
	st := e.waitCompleted(id)
	if st.Job.Succeeded != 50 {
		t.Errorf("job after poison: %s", describe(st))
	}

	type poisoned struct {
		payload  []byte
		metadata map[string]string
	}
	readPoison := func() map[string]poisoned {
		rows, err := side.Read.Query(`SELECT uuid, payload, metadata FROM "watermill_` + messaging.PoisonTopic + `"`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]poisoned{}
		for rows.Next() {
			var uuid string
			var p poisoned
			var md sql.NullString
			if err := rows.Scan(&uuid, &p.payload, &md); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(md.String), &p.metadata); err != nil {
				t.Fatalf("poison metadata %q: %v", md.String, err)
			}
			out[uuid] = p
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	var got map[string]poisoned
	waitUntil(t, "every malformed message on the poison topic", func() bool {
		got = readPoison()
		for _, b := range bads {
			if _, ok := got[b.msg.UUID]; !ok {
				return false
			}
		}
		return true
	})
	for _, b := range bads {
		p := got[b.msg.UUID]
		reason := p.metadata[router.PoisonReasonMetadata]
		if reason == "" || !strings.Contains(reason, b.reasonHint) {
			t.Errorf("%s on %s: poison reason %q, want one mentioning %q", b.msg.Metadata.Get("name"), b.topic, reason, b.reasonHint)
		}
		if p.metadata[router.PoisonTopicMetadata] != b.topic {
			t.Errorf("%s: poison topic %q, want %q", b.msg.UUID, p.metadata[router.PoisonTopicMetadata], b.topic)
		}
		if p.metadata[router.PoisonHandlerMetadata] == "" {
			t.Errorf("%s: no poison handler metadata", b.msg.UUID)
		}
		if string(p.payload) != string(b.msg.Payload) {
			t.Errorf("%s: poisoned payload %q, want the original %q", b.msg.UUID, p.payload, b.msg.Payload)
		}
	}
	if len(got) != len(bads) {
		t.Errorf("%d messages on the poison topic, want %d: a well-formed message was poisoned", len(got), len(bads))
	}
	// The malformed commands were acked, not left to be redelivered.
	waitUntil(t, "the malformed commands removed from the queue", func() bool {
		var left int
		if err := side.Read.QueryRow(`SELECT COUNT(*) FROM jobmill_queue`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})
	if st := e.status(id); st.Job.Duplicates != 0 || st.Job.Late != 0 {
		t.Errorf("job counted the malformed messages: %s", describe(st))
	}
}

// 7. A service stopped in the middle of step 2 and started again on the same database finishes the job
// with exact counts: no sub-job is lost with the process, none is counted twice.
func TestRestartResumes(t *testing.T) {
	const n = 2000
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "resumable",
		Split: splitN,
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
				return nil, err
			}
			rec.record(sc.IdempotencyKey, sc.Attempt)
			return squareResult(sc.Index), nil
		},
		Step3: checkingStep3(rec, squareResult),
	})
	tune := func(c *config.Config) { c.Workers = 4; c.DispatchWindow = 256 }
	path := newPath(t)
	first := startEngine(t, path, types, tune)
	id := first.submit("", "resumable", countInput{N: n})
	first.waitFor(id, "300 sub-jobs done", func(j *job.Job) bool { return j.Succeeded >= 300 })
	first.stop()

	// Between the two processes: the job is mid step 2.
	side := openSide(t, path)
	var state string
	var succeeded int64
	if err := side.Read.QueryRow(`SELECT state, succeeded FROM jobs WHERE id = ?`, id).Scan(&state, &succeeded); err != nil {
		t.Fatal(err)
	}
	if state != string(job.StateStep2Running) || succeeded >= n {
		t.Fatalf("after stopping: state %s succeeded %d; the test needs the job mid step 2", state, succeeded)
	}
	// A graceful stop releases the leases of the commands it held, so that the next process takes them at
	// once instead of after the lease (10s). A command whose handler the stop interrupted is nacked instead
	// and waits only the nack delay (100ms), so only availability beyond a second counts as a kept lease.
	var leased int
	if err := side.Read.QueryRow(`SELECT COUNT(*) FROM jobmill_queue WHERE available_at > ?`, time.Now().Add(time.Second).UnixMilli()).Scan(&leased); err != nil {
		t.Fatal(err)
	}
	if leased != 0 {
		t.Errorf("%d work-queue messages still leased after a graceful stop: the queue subscribers were not closed", leased)
	}
	ranBefore := rec.count()
	t.Logf("stopped with %d sub-jobs counted, %d run", succeeded, ranBefore)

	second := startEngine(t, path, types, tune)
	st := second.waitCompleted(id)
	j := st.Job
	if j.Total != n || j.Succeeded != n || j.Failed != 0 || j.InFlight != 0 || j.NextIndex != n {
		t.Errorf("counters after restart: %s", describe(st))
	}
	if j.TimedOut != 0 || j.Retries != 0 {
		t.Errorf("work was lost with the first process and recovered only by time-outs: %s", describe(st))
	}
	for i := range int64(n) {
		if len(rec.attempts(jobtype.SubJobKey(id, i))) == 0 {
			t.Fatalf("sub-job %d never ran", i)
		}
	}
	if runs := rec.step3Runs(id); runs != 1 {
		t.Errorf("step 3 ran %d times", runs)
	}
	if got := outputOf(t, j); got != (step3Report{Total: n, Succeeded: n, Results: n}) {
		t.Errorf("step 3 output %+v", got)
	}
	waitRecorderEnded(t, second, id, job.StateCompleted)
	t.Logf("%d executions for %d sub-jobs (at-least-once across the restart)", rec.count(), n)
}

// 3c. Transport level: while another process holds the database's write lock for longer than the busy
// timeout, every write of the engine (worker reports, the manager's transaction, queue claims and acks)
// fails. Those failures must be retried, not dropped: the job completes with exact counts, without any
// sub-job having to be timed out (the policy's time-out is far beyond the test's patience).
func TestWriteLockOutageLosesNoReport(t *testing.T) {
	if testing.Short() {
		t.Skip("holds the database lock for 11s")
	}
	const n = 600
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "outage",
		Split: splitN,
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			rec.record(sc.IdempotencyKey, sc.Attempt)
			return nil, sleepCtx(ctx, 5*time.Millisecond)
		},
		Step3:  checkingStep3(rec, nil),
		Policy: jobtype.Policy{SubJobTimeout: 10 * time.Minute},
	})
	path := newPath(t)
	e := startEngine(t, path, types, func(c *config.Config) { c.Workers = 4 })
	id := e.submit("", "outage", countInput{N: n})
	e.waitFor(id, "100 sub-jobs done", func(j *job.Job) bool { return j.Succeeded >= 100 })

	side := openSide(t, path)
	tx, err := side.Write.BeginTx(context.Background(), nil) // BEGIN IMMEDIATE: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	before := e.status(id).Job.Succeeded
	time.Sleep(11 * time.Second) // the engine's busy timeout is 10s
	during := e.status(id).Job.Succeeded
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if during != before {
		t.Fatalf("the job advanced from %d to %d while the write lock was held: the outage did not happen", before, during)
	}

	st := e.waitCompleted(id)
	j := st.Job
	if j.Succeeded != n || j.Failed != 0 || j.TimedOut != 0 || j.Retries != 0 {
		t.Errorf("after the outage: %s", describe(st))
	}
	for i := range int64(n) {
		if len(rec.attempts(jobtype.SubJobKey(id, i))) == 0 {
			t.Fatalf("sub-job %d never ran", i)
		}
	}
	if runs := rec.step3Runs(id); runs != 1 {
		t.Errorf("step 3 ran %d times", runs)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "locked") && !strings.Contains(logs, "BUSY") {
		t.Errorf("no write failed during the outage (no 'database is locked' in the log): the test proves nothing")
	}
	t.Logf("%d executions for %d sub-jobs; duplicates %d, late %d", rec.count(), n, j.Duplicates, j.Late)
}

// Stopping a service (cancel Run's context, wait for Run, Close) leaves no goroutine behind: an embedding
// program may start and stop the engine many times.
func TestStopLeavesNoGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "tiny",
		Split: splitN,
		SubJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			rec.record(sc.IdempotencyKey, sc.Attempt)
			return nil, nil
		},
	})
	e := startEngine(t, newPath(t), types, nil)
	e.waitCompleted(e.submit("", "tiny", countInput{N: 10}))
	e.stop()
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines left after Run returned and Close: %v", err)
	}
}
