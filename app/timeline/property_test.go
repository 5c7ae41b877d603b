package timeline_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/timeline"
)

// genJob draws the events of one job as the log could hold them: step 1, sub-jobs whose attempts
// succeed, fail or time out (some reported twice by their worker), and an end, or none yet.
func genJob(t *rapid.T) []job.Message {
	var seq int64
	next := func() int64 { seq++; return seq }
	n := rapid.IntRange(0, 5).Draw(t, "subjobs")
	events := []job.Message{
		started("acme", next(), 0),
		job.Step1Completed{JobID: jobID, Attempt: 1, Total: int64(n), At: ts(1)},
		job.Step2Started{JobID: jobID, Total: int64(n), Seq: next(), At: ts(2)},
	}
	sec := 10
	at := func() int { sec += rapid.IntRange(0, 2).Draw(t, "gap"); return sec }
	for i := range int64(n) {
		attempts := rapid.IntRange(1, 3).Draw(t, "attempts")
		for a := 1; a <= attempts; a++ {
			outcome := rapid.SampledFrom([]string{"ok", "fail", "timeout", "timeout+fail", "timeout+ok"}).Draw(t, "outcome")
			if outcome == "timeout" || outcome == "timeout+fail" || outcome == "timeout+ok" {
				events = append(events, timedOut(i, a, next(), at()))
			}
			reports := 1 + rapid.IntRange(0, 1).Draw(t, "worker reports") // a worker may report twice
			for range reports {
				switch outcome {
				case "ok", "timeout+ok":
					events = append(events, ok(i, a, at(), time.Duration(rapid.IntRange(1, 9).Draw(t, "duration"))*time.Second))
				case "fail", "timeout+fail":
					events = append(events, fail(i, a, at(), fmt.Sprintf("error %d.%d", i, a)))
				}
			}
		}
	}
	counts := job.Counts{Total: int64(n), Succeeded: int64(rapid.IntRange(0, n).Draw(t, "succeeded"))}
	counts.Failed = int64(rapid.IntRange(0, n-int(counts.Succeeded)).Draw(t, "failed"))
	switch rapid.SampledFrom([]string{"running", "step 2 closed", "completed", "failed", "cancelled"}).Draw(t, "end") {
	case "step 2 closed":
		events = append(events, step2Completed(next(), at()))
	case "completed":
		events = append(events, step2Completed(next(), at()), job.Step3Completed{JobID: jobID, Attempt: 1, At: ts(at())},
			job.JobCompleted{JobID: jobID, Seq: next(), At: ts(at()), Counts: counts})
	case "failed":
		events = append(events, job.JobFailed{JobID: jobID, Reason: "too many failures", Seq: next(), At: ts(at()), Counts: counts})
	case "cancelled":
		events = append(events, job.JobCancelled{JobID: jobID, Reason: "by user", Seq: next(), At: ts(at()), Counts: counts})
	}
	return events
}

// projected is everything the read side shows of the job.
type projected struct {
	summary timeline.Summary
	subJobs []timeline.SubJob
	entries []timeline.Entry
}

func project(t *rapid.T, ds []delivery) projected {
	st := newMemStore()
	p, err := timeline.New(st)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, d := range ds {
		if err := p.Apply(ctx, d.id, d.ev); err != nil {
			t.Fatal(err)
		}
	}
	return view(t, p)
}

// view reads everything the projection shows of the job.
func view(t *rapid.T, p *timeline.Projection) projected {
	ctx := context.Background()
	var out projected
	var err error
	if out.summary, err = p.Job(ctx, jobID, "acme"); err != nil {
		t.Fatal(err)
	}
	if out.subJobs, err = p.SubJobs(ctx, jobID, "acme", "", -1, 0); err != nil {
		t.Fatal(err)
	}
	if out.entries, err = p.Timeline(ctx, jobID, "acme", 0, 0); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOrderAndRedeliveryDoNotMatter: a job's events applied in any order, with redeliveries and ticks
// mixed in, give the views of applying them once each in log order, and a timeline holding each event
// exactly once.
func TestOrderAndRedeliveryDoNotMatter(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		inOrder := numbered(genJob(t)...)
		want := project(t, inOrder)

		var arrived []delivery
		for _, d := range rapid.Permutation(inOrder).Draw(t, "arrival order") {
			arrived = append(arrived, d)
			for range rapid.IntRange(0, 2).Draw(t, "redeliveries") {
				at := rapid.IntRange(0, len(arrived)).Draw(t, "redelivered at")
				arrived = slices.Insert(arrived, at, d)
			}
			if rapid.Bool().Draw(t, "tick") {
				arrived = append(arrived, delivery{id: fmt.Sprintf("tick-%d", len(arrived)), ev: job.Tick{JobID: jobID, At: ts(99)}})
			}
		}
		got := project(t, arrived)

		if !reflect.DeepEqual(got.summary, want.summary) {
			t.Fatalf("summary:\n got %+v\nwant %+v", got.summary, want.summary)
		}
		if !reflect.DeepEqual(got.subJobs, want.subJobs) {
			t.Fatalf("sub-jobs:\n got %+v\nwant %+v", got.subJobs, want.subJobs)
		}
		if len(got.entries) != len(inOrder) {
			t.Fatalf("%d entries, want one per event: %d", len(got.entries), len(inOrder))
		}
		wantByID := map[string]timeline.Entry{}
		for _, e := range want.entries {
			wantByID[e.EventID] = e
		}
		for i, e := range got.entries {
			if e.Pos != int64(i+1) {
				t.Fatalf("entry %d at position %d", i, e.Pos)
			}
			w, ok := wantByID[e.EventID]
			if !ok {
				t.Fatalf("entry %s twice, or of no event", e.EventID)
			}
			delete(wantByID, e.EventID)
			w.Pos = e.Pos
			if !reflect.DeepEqual(e, w) {
				t.Fatalf("entry:\n got %+v\nwant %+v", e, w)
			}
		}
	})
}

// TestReportsTogether: runs of worker reports applied together, as the router hands over a worker's
// message, some messages delivered twice, give the views of applying each event once, alone.
func TestReportsTogether(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		inOrder := numbered(genJob(t)...)
		want := project(t, inOrder)

		st := newMemStore()
		p, err := timeline.New(st)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		isReport := func(m job.Message) bool {
			switch m.(type) {
			case job.Step2SubjobCompleted, job.Step2SubjobFailed:
				return true
			}
			return false
		}
		for i := 0; i < len(inOrder); {
			if !isReport(inOrder[i].ev) {
				if err := p.Apply(ctx, inOrder[i].id, inOrder[i].ev); err != nil {
					t.Fatal(err)
				}
				i++
				continue
			}
			size := rapid.IntRange(1, 6).Draw(t, "batch size")
			var ids []string
			var reports []job.Message
			for ; i < len(inOrder) && len(reports) < size && isReport(inOrder[i].ev); i++ {
				ids, reports = append(ids, inOrder[i].id), append(reports, inOrder[i].ev)
			}
			for range 1 + rapid.IntRange(0, 1).Draw(t, "redelivered") {
				if err := p.ApplyReports(ctx, ids, reports); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got := view(t, p); !reflect.DeepEqual(got, want) {
			t.Fatalf("reports together:\n got %+v\nwant %+v", got, want)
		}
	})
}
