package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/jobtypes/synthetic"
)

// step3Report is what the test types' step 3 returns: what it learnt from the summary.
type step3Report struct {
	Total     int64  `json:"total"`
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"`
	Results   int64  `json:"results"`
	Problem   string `json:"problem,omitempty"`
}

// squareResult is the result of sub-job i of the counting types.
func squareResult(i int64) []byte { return []byte(fmt.Sprintf(`{"sq":%d}`, i*i)) }

// checkingStep3 returns a step 3 that streams the results and checks that they come in index order,
// one per succeeded sub-job, each the result its sub-job returned (want(index), nil: any).
func checkingStep3(rec *calls, want func(int64) []byte) func(context.Context, jobtype.StepContext, jobtype.Summary) ([]byte, error) {
	return func(_ context.Context, sc jobtype.StepContext, s jobtype.Summary) ([]byte, error) {
		rec.step3(sc.JobID)
		out := step3Report{Total: s.Total, Succeeded: s.Succeeded, Failed: s.Failed}
		last := int64(-1)
		err := s.Results(func(idx int64, res []byte) error {
			switch {
			case idx <= last:
				return fmt.Errorf("result %d after result %d: not in index order", idx, last)
			case want != nil && string(res) != string(want(idx)):
				return fmt.Errorf("result %d is %q, want %q", idx, res, want(idx))
			}
			last = idx
			out.Results++
			return nil
		})
		if err != nil {
			out.Problem = err.Error()
		}
		return json.Marshal(out)
	}
}

func outputOf(t *testing.T, j *job.Job) step3Report {
	t.Helper()
	var r step3Report
	if err := json.Unmarshal(j.Output, &r); err != nil {
		t.Fatalf("job %s output %q: %v", j.ID, j.Output, err)
	}
	return r
}

// waitRecorderEnded checks that this process's manager reported the job's end with the given state.
func waitRecorderEnded(t *testing.T, e *engine, id string, want job.State) {
	t.Helper()
	select {
	case st := <-e.svc.Recorder.Ended(id):
		if st != want {
			t.Errorf("Recorder.Ended(%s) = %s, want %s", id, st, want)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Recorder.Ended(%s) never fired (job state %s)", id, e.status(id).Job.State)
	}
}

// 1. One job of 2,000 sub-jobs: every sub-job runs once, is counted once, and step 3 sees every result
// in index order.
func TestJobCompletesAndCountsExactly(t *testing.T) {
	const n = 2000
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "count",
		Split: splitN,
		SubJob: func(_ context.Context, sc jobtype.SubJobContext, raw []byte) ([]byte, error) {
			i, err := parseItem(raw)
			if err != nil {
				return nil, err
			}
			if int64(i) != sc.Index {
				return nil, fmt.Errorf("sub-job %d got the input of sub-job %d", sc.Index, i)
			}
			rec.record(sc.IdempotencyKey, sc.Attempt)
			return squareResult(sc.Index), nil
		},
		Step3: checkingStep3(rec, squareResult),
	})
	// A window much smaller than the job makes dispatch stream through refills.
	e := startEngine(t, newPath(t), types, func(c *config.Config) { c.Workers = 8; c.DispatchWindow = 128 })

	id := e.submit("acme", "count", countInput{N: n})
	st := e.waitCompleted(id)
	j := st.Job

	if j.Total != n || j.Succeeded != n || j.Failed != 0 || j.NextIndex != n || j.InFlight != 0 {
		t.Errorf("counters: %s; want total=succeeded=next=%d, failed=inflight=0", describe(st), n)
	}
	if j.Retries != 0 || j.TimedOut != 0 || j.Duplicates != 0 || j.Late != 0 {
		t.Errorf("a clean run needs no retry, time-out, duplicate or late report: %s", describe(st))
	}
	if len(st.SubJobs) != 1 || st.SubJobs[job.SubJobSucceeded] != n {
		t.Errorf("sub-job states %v, want all %d SUCCEEDED", st.SubJobs, n)
	}
	// Every sub-job ran exactly once, under its own idempotency key.
	if got := rec.count(); got != n {
		t.Errorf("%d sub-job executions, want %d", got, n)
	}
	for i := range int64(n) {
		if got := rec.attempts(jobtype.SubJobKey(id, i)); !slices.Equal(got, []int{1}) {
			t.Fatalf("sub-job %d ran attempts %v, want [1]", i, got)
		}
	}
	if runs := rec.step3Runs(id); runs != 1 {
		t.Errorf("step 3 ran %d times, want 1", runs)
	}
	want := step3Report{Total: n, Succeeded: n, Failed: 0, Results: n}
	if got := outputOf(t, j); got != want {
		t.Errorf("step 3 output %+v, want %+v", got, want)
	}
	for i, s := range j.Steps {
		if s.StartedAt.IsZero() || s.FinishedAt.IsZero() || s.FinishedAt.Before(s.StartedAt) {
			t.Errorf("step %d times %+v", i+1, s)
		}
	}
	waitRecorderEnded(t, e, id, job.StateCompleted)
}

// 2. The synthetic type reports about half of its successes twice, as an at-least-once transport may: the
// job still counts each sub-job once, and every second report is absorbed as a duplicate (or, for the
// report that closed step 2, as late).
func TestDuplicateReportsAbsorbed(t *testing.T) {
	const n = 3000
	def := synthetic.Definition(jobtype.Policy{})
	in := synthetic.Input{SubJobs: n, DuplicateRate: 0.5, Seed: 7}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	// The type decides from each sub-job's input whether to report twice: count how many it will.
	told := 0
	err = def.Split(context.Background(), jobtype.StepContext{}, raw, func(b []byte) error {
		if def.ReportTwice(b) {
			told++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if told < n/4 || told > 3*n/4 {
		t.Fatalf("the synthetic type reports %d of %d sub-jobs twice; expected about half", told, n)
	}

	e := startEngine(t, newPath(t), registry(t, def), func(c *config.Config) { c.Workers = 8 })
	id := e.submit("", synthetic.Name, in)
	st := e.waitCompleted(id)
	j := st.Job
	if j.Succeeded != n || j.Failed != 0 || j.Total != n {
		t.Errorf("counters: %s; want succeeded=total=%d", describe(st), n)
	}
	if j.Duplicates == 0 {
		t.Errorf("no duplicate absorbed, but %d sub-jobs reported twice", told)
	}
	// A duplicate of the report that closed step 2 arrives after step 2 and counts as late: Step2Completed
	// can close on any sub-job. Reports may still be in flight when the job completes: wait for them.
	st = e.waitFor(id, "every duplicate report absorbed", func(j *job.Job) bool { return j.Duplicates+j.Late >= int64(told) })
	time.Sleep(300 * time.Millisecond) // an over-count would show up here
	st = e.status(id)
	if got := st.Job.Duplicates + st.Job.Late; got != int64(told) {
		t.Errorf("duplicates %d + late %d = %d, want the %d second reports the type made", st.Job.Duplicates, st.Job.Late, got, told)
	}
	if st.Job.Late > 1 {
		t.Errorf("%d late reports: only the duplicate of the report that closed step 2 can be late", st.Job.Late)
	}
	if st.Job.Succeeded != n {
		t.Errorf("succeeded changed to %d after completion", st.Job.Succeeded)
	}
	dups, late := e.svc.Recorder.AbsorbedCounts()
	if dups+late != int64(told) {
		t.Errorf("recorder absorbed %d duplicates + %d late, want %d", dups, late, told)
	}
	var out map[string]int64
	if err := json.Unmarshal(j.Output, &out); err != nil || out["total"] != n || out["succeeded"] != n || out["failed"] != 0 {
		t.Errorf("step 3 output %s (%v)", j.Output, err)
	}
}

// 3. A sub-job whose first attempt fails (by error, or by panicking) is retried by the policy, and the
// retry's success counts: the failure is neither dropped nor counted as a final outcome.
func TestHandlerFailureIsRetriedNotDropped(t *testing.T) {
	const n = 100
	const failing, panicking = 13, 29
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "flaky",
		Split: splitN,
		SubJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			rec.record(sc.IdempotencyKey, sc.Attempt)
			switch {
			case sc.Index == failing && sc.Attempt == 1:
				return nil, errFirstAttempt
			case sc.Index == panicking && sc.Attempt == 1:
				panic("first attempt panics on purpose")
			}
			return []byte(strconv.Itoa(sc.Attempt)), nil
		},
		Step3:  checkingStep3(rec, nil),
		Policy: jobtype.Policy{MaxAttempts: 3, Backoff: noBackoff},
	})
	e := startEngine(t, newPath(t), types, nil)
	id := e.submit("", "flaky", countInput{N: n})
	st := e.waitCompleted(id)
	j := st.Job
	if j.Succeeded != n || j.Failed != 0 || j.Retries != 2 || j.TimedOut != 0 {
		t.Errorf("counters: %s; want succeeded=%d failed=0 retries=2 timedout=0", describe(st), n)
	}
	for i := range int64(n) {
		want := []int{1}
		if i == failing || i == panicking {
			want = []int{1, 2}
		}
		if got := rec.attempts(jobtype.SubJobKey(id, i)); !slices.Equal(got, want) {
			t.Errorf("sub-job %d ran attempts %v, want %v", i, got, want)
		}
	}
	subs, err := e.svc.Store.ListSubJobs(context.Background(), id, "", -1, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs {
		wantAttempt := 1
		if s.Index == failing || s.Index == panicking {
			wantAttempt = 2
		}
		if s.State != job.SubJobSucceeded || s.Attempt != wantAttempt {
			t.Errorf("sub-job %d: state %s attempt %d, want SUCCEEDED attempt %d", s.Index, s.State, s.Attempt, wantAttempt)
		}
	}
	// The stored result is the retry's.
	err = e.svc.Store.ForEachResult(context.Background(), id, func(idx int64, res []byte) error {
		want := "1"
		if idx == failing || idx == panicking {
			want = "2"
		}
		if string(res) != want {
			t.Errorf("result of sub-job %d = %q, want %q", idx, res, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := outputOf(t, j); got != (step3Report{Total: n, Succeeded: n, Results: n}) {
		t.Errorf("step 3 output %+v", got)
	}
}

// 3b. Failures beyond the retries: a sub-job that always fails is failed for good after MaxAttempts;
// within the tolerated failures the job completes with it counted as failed, beyond them the job fails.
func TestPermanentSubJobFailure(t *testing.T) {
	const n = 50
	rec := newCalls()
	sub := func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
		rec.record(sc.IdempotencyKey, sc.Attempt)
		if sc.Index%10 == 3 { // 3, 13, 23, 33, 43
			return nil, fmt.Errorf("sub-job %d always fails", sc.Index)
		}
		return []byte("ok"), nil
	}
	types := registry(t,
		jobtype.Definition{Name: "tolerant", Split: splitN, SubJob: sub, Step3: checkingStep3(rec, nil),
			Policy: jobtype.Policy{MaxAttempts: 2, Backoff: noBackoff, ToleratedFailures: 5}},
		jobtype.Definition{Name: "strict", Split: splitN, SubJob: sub, Step3: checkingStep3(rec, nil),
			Policy: jobtype.Policy{MaxAttempts: 2, Backoff: noBackoff, ToleratedFailures: 4}},
	)
	e := startEngine(t, newPath(t), types, nil)
	tolerant := e.submit("", "tolerant", countInput{N: n})
	strict := e.submit("", "strict", countInput{N: n})

	st := e.waitCompleted(tolerant)
	if j := st.Job; j.Succeeded != n-5 || j.Failed != 5 || j.Retries != 5 {
		t.Errorf("tolerant job: %s; want succeeded=%d failed=5 retries=5", describe(st), n-5)
	}
	if got := outputOf(t, st.Job); got != (step3Report{Total: n, Succeeded: n - 5, Failed: 5, Results: n - 5}) {
		t.Errorf("tolerant job's step 3 output %+v", got)
	}
	for _, i := range []int64{3, 13, 23, 33, 43} {
		if got := rec.attempts(jobtype.SubJobKey(tolerant, i)); !slices.Equal(got, []int{1, 2}) {
			t.Errorf("tolerant sub-job %d ran attempts %v, want [1 2]", i, got)
		}
	}

	st = e.waitEnded(strict)
	if st.Job.State != job.StateFailed || st.Job.Error == "" {
		t.Errorf("strict job with 5 failures and 4 tolerated: %s; want FAILED with a reason", describe(st))
	}
	if runs := rec.step3Runs(strict); runs != 0 {
		t.Errorf("step 3 of the failed job ran %d times", runs)
	}
	waitRecorderEnded(t, e, strict, job.StateFailed)
}

// 4. A sub-job attempt that never reports back is timed out by the tick and retried; when the timed-out
// attempt finally reports success, after the job completed, the report is absorbed as late and changes
// nothing: every execution's report is counted exactly once, as a success, a duplicate or a late report.
func TestTickTimesOutSilentSubJob(t *testing.T) {
	const n = 20
	const silent = 7
	rec := newCalls()
	release := make(chan struct{})
	var running atomic.Int64 // executions that have not returned yet
	var lateReturned atomic.Bool
	types := registry(t, jobtype.Definition{
		Name:  "silent",
		Split: splitN,
		SubJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			running.Add(1)
			defer running.Add(-1)
			rec.record(sc.IdempotencyKey, sc.Attempt)
			if sc.Index == silent && sc.Attempt == 1 {
				// Ignores its context: the worker cannot stop it, only the tick can give up on it.
				select {
				case <-release:
				case <-time.After(30 * time.Second):
				}
				defer lateReturned.Store(true)
			}
			return []byte("attempt " + strconv.Itoa(sc.Attempt)), nil
		},
		Step3: checkingStep3(rec, nil),
		// Generous for the other sub-jobs under -race on a busy machine; a time-out of one of them only
		// adds a retry, which the assertions allow for.
		Policy: jobtype.Policy{SubJobTimeout: time.Second, MaxAttempts: 3, Backoff: noBackoff},
	})
	e := startEngine(t, newPath(t), types, func(c *config.Config) { c.Tick = 50 * time.Millisecond })
	id := e.submit("", "silent", countInput{N: n})
	st := e.waitCompleted(id)
	if lateReturned.Load() {
		t.Fatal("the silent attempt returned before the job completed: the test proves nothing")
	}
	close(release)
	j := st.Job
	if j.Succeeded != n || j.Failed != 0 {
		t.Errorf("counters: %s; want succeeded=%d failed=0", describe(st), n)
	}
	if j.TimedOut < 1 || j.Retries < 1 || j.Retries < j.TimedOut {
		t.Errorf("the silent attempt was not timed out and retried: %s", describe(st))
	}
	if got := rec.attempts(jobtype.SubJobKey(id, silent)); len(got) < 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("silent sub-job ran attempts %v, want 1 then 2", got)
	}
	subs, err := e.svc.Store.ListSubJobs(context.Background(), id, "", silent-1, 1)
	if err != nil || len(subs) != 1 || subs[0].State != job.SubJobSucceeded || subs[0].Attempt < 2 {
		t.Errorf("silent sub-job in the store: %+v (%v), want SUCCEEDED at attempt ≥ 2", subs, err)
	}
	waitUntil(t, "every execution returned", func() bool { return running.Load() == 0 })
	executions := int64(rec.count())
	st = e.waitFor(id, "every report absorbed", func(j *job.Job) bool { return j.Succeeded+j.Duplicates+j.Late >= executions })
	time.Sleep(300 * time.Millisecond) // an over-count would show up here
	st = e.status(id)
	if got := st.Job.Succeeded + st.Job.Duplicates + st.Job.Late; got != executions {
		t.Errorf("%d executions reported, but succeeded %d + duplicates %d + late %d = %d", executions,
			st.Job.Succeeded, st.Job.Duplicates, st.Job.Late, got)
	}
	if st.Job.Late < 1 {
		t.Errorf("the silent attempt's report, made after the job completed, was not counted as late: %s", describe(st))
	}
	if st.Job.Succeeded != n || st.Job.State != job.StateCompleted {
		t.Errorf("the late report changed the job: %s", describe(st))
	}
	// The stored result is the one of the attempt that counted.
	err = e.svc.Store.ForEachResult(context.Background(), id, func(idx int64, res []byte) error {
		if idx == silent && string(res) == "attempt 1" {
			t.Errorf("the late attempt's result replaced the counted one")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs := rec.step3Runs(id); runs != 1 {
		t.Errorf("step 3 ran %d times", runs)
	}
}

// 5. Cancelling a job stops its sub-jobs: queued ones are skipped, nothing more is dispatched, and every
// report of a sub-job that was running is absorbed as late.
func TestCancelStopsDispatch(t *testing.T) {
	const n = 500
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "slow",
		Split: splitN,
		SubJob: func(ctx context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			rec.record(sc.IdempotencyKey, sc.Attempt)
			time.Sleep(50 * time.Millisecond) // not interruptible: a sub-job in progress finishes
			return nil, nil
		},
		Step3: checkingStep3(rec, nil),
	})
	path := newPath(t)
	e := startEngine(t, path, types, func(c *config.Config) { c.Workers = 4 })
	id := e.submit("", "slow", countInput{N: n})
	deadline := time.Now().Add(waitLimit)
	for rec.count() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d sub-jobs ran: %s", rec.count(), describe(e.status(id)))
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := e.svc.App.Commands.CancelJob.Handle(context.Background(), command.CancelJob{JobID: id, Tenant: command.DefaultTenant, Reason: "test"})
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	atCancel := rec.count()
	if st := e.status(id); st.Job.State != job.StateCancelled || st.Job.Error != "test" || st.Job.EndedAt.IsZero() {
		t.Fatalf("after cancel: %s ended %v", describe(st), st.Job.EndedAt)
	}
	// Cancelling twice is refused: the job already ended.
	err = e.svc.App.Commands.CancelJob.Handle(context.Background(), command.CancelJob{JobID: id})
	if !errors.Is(err, job.ErrTerminal) {
		t.Errorf("second cancel: %v, want ErrTerminal", err)
	}

	time.Sleep(time.Second)
	c1 := rec.count()
	time.Sleep(500 * time.Millisecond)
	c2 := rec.count()
	if c1 != c2 {
		t.Errorf("sub-jobs still start after cancel: %d executions, then %d 500ms later", c1, c2)
	}
	if c2 >= n/2 {
		t.Errorf("%d of %d sub-jobs ran (%d at cancel): cancel did not stop dispatch", c2, n, atCancel)
	}
	t.Logf("%d sub-jobs ran before cancel, %d in total", atCancel, c2)

	// Every execution reports once: counted before the cancel, late after it.
	st := e.waitFor(id, "every report of a running sub-job absorbed", func(j *job.Job) bool { return j.Succeeded+j.Late >= int64(c2) })
	time.Sleep(200 * time.Millisecond)
	st = e.status(id)
	if st.Job.Succeeded+st.Job.Late != int64(c2) || st.Job.Duplicates != 0 {
		t.Errorf("%d executions, but succeeded %d + late %d (duplicates %d)", c2, st.Job.Succeeded, st.Job.Late, st.Job.Duplicates)
	}
	if st.Job.State != job.StateCancelled {
		t.Errorf("state %s after cancel", st.Job.State)
	}
	if runs := rec.step3Runs(id); runs != 0 {
		t.Errorf("step 3 of the cancelled job ran %d times", runs)
	}
	// The sub-jobs that were still queued are skipped, not left behind.
	db := openSide(t, path)
	waitUntil(t, "the cancelled job's queued sub-jobs drained", func() bool {
		var left int
		if err := db.Read.QueryRow(`SELECT COUNT(*) FROM jobmill_queue WHERE topic = 'jobmill.work.RunSubJobs'`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})
	// Recorder.Ended only reports ends decided by the manager; a cancel is decided by the command.
	select {
	case s := <-e.svc.Recorder.Ended(id):
		t.Logf("Recorder.Ended reports %s for the cancelled job", s)
	case <-time.After(200 * time.Millisecond):
		t.Logf("note: Recorder.Ended does not fire for a cancelled job")
	}
}

// 8. Many jobs of several tenants at once: every job completes with exact counts, and a tenant sees only
// its own jobs.
func TestManyJobsConcurrently(t *testing.T) {
	const jobs, per = 20, 200
	tenants := []string{"t-a", "t-b", "t-c"}
	rec := newCalls()
	types := registry(t, jobtype.Definition{
		Name:  "multi",
		Split: splitN,
		SubJob: func(_ context.Context, sc jobtype.SubJobContext, _ []byte) ([]byte, error) {
			rec.record(sc.IdempotencyKey, sc.Attempt)
			return squareResult(sc.Index), nil
		},
		Step3: checkingStep3(rec, squareResult),
	})
	e := startEngine(t, newPath(t), types, func(c *config.Config) { c.Workers = 8; c.DispatchWindow = 64 })

	ids := make([]string, jobs)
	errs := make([]error, jobs)
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() {
			raw, _ := json.Marshal(countInput{N: per})
			ids[i], errs[i] = e.svc.App.Commands.SubmitJob.Handle(context.Background(),
				command.SubmitJob{Tenant: tenants[i%len(tenants)], Type: "multi", Input: raw})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		st := e.waitCompleted(id)
		j := st.Job
		if j.Tenant != tenants[i%len(tenants)] {
			t.Errorf("job %s tenant %q, want %q", id, j.Tenant, tenants[i%len(tenants)])
		}
		if j.Total != per || j.Succeeded != per || j.Failed != 0 || j.Duplicates != 0 || j.Late != 0 {
			t.Errorf("job %d: %s", i, describe(st))
		}
		if got := outputOf(t, j); got != (step3Report{Total: per, Succeeded: per, Results: per}) {
			t.Errorf("job %d step 3 output %+v", i, got)
		}
		if runs := rec.step3Runs(id); runs != 1 {
			t.Errorf("job %d: step 3 ran %d times", i, runs)
		}
		for k := range int64(per) {
			if got := rec.attempts(jobtype.SubJobKey(id, k)); !slices.Equal(got, []int{1}) {
				t.Fatalf("job %d sub-job %d ran attempts %v", i, k, got)
			}
		}
		// Another tenant cannot see or cancel it.
		other := tenants[(i+1)%len(tenants)]
		if _, err := e.svc.App.Queries.JobStatus.Handle(context.Background(), id, other); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("job %s seen by tenant %s: %v", id, other, err)
		}
		if err := e.svc.App.Commands.CancelJob.Handle(context.Background(), command.CancelJob{JobID: id, Tenant: other}); !errors.Is(err, job.ErrNotFound) {
			t.Errorf("job %s cancelled by tenant %s: %v", id, other, err)
		}
	}
	if got := rec.count(); got != jobs*per {
		t.Errorf("%d sub-job executions, want %d", got, jobs*per)
	}
	for ti, tenant := range tenants {
		list, err := e.svc.Store.ListJobs(context.Background(), job.ListFilter{Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for i := range jobs {
			if i%len(tenants) == ti {
				want++
			}
		}
		if len(list) != want {
			t.Errorf("tenant %s lists %d jobs, want %d", tenant, len(list), want)
		}
	}
}
