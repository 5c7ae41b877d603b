package manager_test

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/jobmill/jobmill/app/job"
)

// Workers report in batches of any make-up: several sub-jobs per message, a report repeated inside one
// message or across messages, whole messages delivered again, failures mixed with successes, consumed in
// any order. Step 2 must still close exactly once with every sub-job counted once.
func TestBatchedReportsInAnyOrder(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		total := rapid.IntRange(1, 60).Draw(rt, "total")
		window := rapid.IntRange(1, 16).Draw(rt, "window")
		p := testPolicy()
		p.SubJobsPerCommand = rapid.IntRange(0, 6).Draw(rt, "subjobsPerCommand")
		p.ToleratedFailurePercent = 100
		failPercent := rapid.IntRange(0, 60).Draw(rt, "failPercent")

		f := newFixture(t, window)
		f.startStep2("job-r", p, total)

		var pending []job.Message // single reports not yet put in a message
		var inbox []*job.Step2SubjobsReported
		seen, firstRuns := 0, map[int64]int{}
		take := func() {
			_, cmds := f.store.published()
			for _, c := range ofType[job.RunSubJobs](cmds[seen:]) {
				if size := p.CommandSize(int64(total)); len(c.Runs) > size {
					rt.Fatalf("command of %d sub-jobs, more than %d", len(c.Runs), size)
				}
				for _, r := range c.Runs {
					if r.Attempt == 1 {
						firstRuns[r.Index]++
					}
					var report job.Message = job.Step2SubjobCompleted{JobID: c.JobID, Index: r.Index, Attempt: r.Attempt, Result: []byte("ok")}
					if rapid.IntRange(0, 99).Draw(rt, "fails") < failPercent {
						report = job.Step2SubjobFailed{JobID: c.JobID, Index: r.Index, Attempt: r.Attempt, Error: "boom"}
					}
					for range rapid.IntRange(1, 2).Draw(rt, "copies") {
						pending = append(pending, report)
					}
				}
			}
			seen = len(cmds)
		}
		// pack puts a random share of the pending reports into one message.
		pack := func() {
			n := rapid.IntRange(1, len(pending)).Draw(rt, "reportsPerMessage")
			msg := &job.Step2SubjobsReported{JobID: "job-r"}
			for range n {
				i := rapid.IntRange(0, len(pending)-1).Draw(rt, "report")
				switch r := pending[i].(type) {
				case job.Step2SubjobCompleted:
					msg.Completed = append(msg.Completed, r)
				case job.Step2SubjobFailed:
					msg.Failed = append(msg.Failed, r)
				}
				pending = append(pending[:i], pending[i+1:]...)
			}
			inbox = append(inbox, msg)
		}
		take()
		for steps := 0; len(pending) > 0 || len(inbox) > 0; steps++ {
			if steps > 10_000 {
				rt.Fatalf("no end after %d deliveries", steps)
			}
			if len(pending) > 0 && (len(inbox) == 0 || rapid.Bool().Draw(rt, "packFirst")) {
				pack()
				continue
			}
			i := rapid.IntRange(0, len(inbox)-1).Draw(rt, "message")
			msg := inbox[i]
			if !rapid.Bool().Draw(rt, "deliverAgainLater") {
				inbox = append(inbox[:i], inbox[i+1:]...)
			}
			f.must(f.m.OnSubJobsReported(f.ctx, msg))
			take()
		}

		events, _ := f.store.published()
		closed := ofType[job.Step2Completed](events)
		if len(closed) != 1 || closed[0].Succeeded+closed[0].Failed != int64(total) {
			rt.Fatalf("Step2Completed = %+v, want one closing %d sub-jobs", closed, total)
		}
		for i := range int64(total) {
			if firstRuns[i] != 1 {
				rt.Fatalf("sub-job %d dispatched %d times", i, firstRuns[i])
			}
		}
		j := f.store.job(t, "job-r")
		counts, err := f.store.CountSubJobs(f.ctx, "job-r")
		f.must(err)
		if j.InFlight != 0 || j.Succeeded != counts[job.SubJobSucceeded] || j.Failed != counts[job.SubJobFailed] ||
			j.Succeeded+j.Failed != int64(total) {
			rt.Fatalf("job %s in flight %d, succeeded %d, failed %d; sub-jobs %v", fmt.Sprint(j.State), j.InFlight, j.Succeeded, j.Failed, counts)
		}
	})
}
