package stats

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/jobmill/jobmill/app/job"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func TestFoldSuccess(t *testing.T) {
	report := func(attempt int, atMs, durMs int) job.Step2SubjobCompleted {
		return job.Step2SubjobCompleted{JobID: "j", Index: 4, Attempt: attempt,
			At: t0.Add(time.Duration(atMs) * time.Millisecond), Duration: time.Duration(durMs) * time.Millisecond}
	}
	counted := func(attempt int64, atMs, durMs int) SubJobRecord {
		return SubJobRecord{JobID: "j", Index: 4, MaxAttempt: attempt, SuccessAttempt: attempt,
			SuccessAt: t0.Add(time.Duration(atMs) * time.Millisecond), SuccessDuration: time.Duration(durMs) * time.Millisecond}
	}
	c := func(attempt int64, atMs, durMs int) *completion {
		return &completion{At: t0.Add(time.Duration(atMs) * time.Millisecond), Duration: time.Duration(durMs) * time.Millisecond, Attempt: attempt}
	}
	for _, tc := range []struct {
		name      string
		rec       Record
		sub       SubJobRecord
		found     bool
		report    job.Step2SubjobCompleted
		wantRec   Record
		wantSub   SubJobRecord
		wantAdded *completion
		wantRemov *completion
		changed   bool
	}{
		{name: "first report of a sub-job", sub: SubJobRecord{JobID: "j", Index: 4}, report: report(1, 10, 5),
			wantRec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, DurationSum: 5 * time.Millisecond},
			wantSub: counted(1, 10, 5), wantAdded: c(1, 10, 5), changed: true},
		{name: "success after failures counts the attempts",
			rec: Record{SubJobs: 1, SubJobAttempts: 2}, sub: SubJobRecord{JobID: "j", Index: 4, MaxAttempt: 2}, found: true,
			report:  report(3, 10, 5),
			wantRec: Record{SubJobs: 1, SubJobAttempts: 3, Succeeded: 1, DurationSum: 5 * time.Millisecond},
			wantSub: counted(3, 10, 5), wantAdded: c(3, 10, 5), changed: true},
		{name: "a later report is a duplicate",
			rec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, DurationSum: 5 * time.Millisecond}, sub: counted(1, 10, 5), found: true,
			report:  report(1, 11, 2),
			wantRec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, Duplicates: 1, DurationSum: 5 * time.Millisecond},
			wantSub: counted(1, 10, 5)},
		{name: "an earlier report replaces the one counted",
			rec: Record{SubJobs: 1, SubJobAttempts: 2, Succeeded: 1, DurationSum: 5 * time.Millisecond},
			sub: func() SubJobRecord { s := counted(2, 10, 5); return s }(), found: true,
			report:    report(1, 9, 60_000),
			wantRec:   Record{SubJobs: 1, SubJobAttempts: 2, Succeeded: 1, Duplicates: 1, DurationSum: 60 * time.Second},
			wantSub:   SubJobRecord{JobID: "j", Index: 4, MaxAttempt: 2, SuccessAttempt: 1, SuccessAt: t0.Add(9 * time.Millisecond), SuccessDuration: time.Minute},
			wantAdded: c(1, 9, 60_000), wantRemov: c(2, 10, 5), changed: true},
		{name: "same time: the shorter run counts",
			rec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, DurationSum: 5 * time.Millisecond}, sub: counted(1, 10, 5), found: true,
			report:  report(1, 10, 4),
			wantRec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, Duplicates: 1, DurationSum: 4 * time.Millisecond},
			wantSub: counted(1, 10, 4), wantAdded: c(1, 10, 4), wantRemov: c(1, 10, 5), changed: true},
		{name: "the same report under a new id changes nothing but the duplicates",
			rec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, DurationSum: 5 * time.Millisecond}, sub: counted(1, 10, 5), found: true,
			report:  report(1, 10, 5),
			wantRec: Record{SubJobs: 1, SubJobAttempts: 1, Succeeded: 1, Duplicates: 1, DurationSum: 5 * time.Millisecond},
			wantSub: counted(1, 10, 5)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, sub := tc.rec, tc.sub
			ch := foldSuccess(&rec, &sub, tc.found, tc.report)
			if !reflect.DeepEqual(rec, tc.wantRec) {
				t.Errorf("record %+v, want %+v", rec, tc.wantRec)
			}
			if !reflect.DeepEqual(sub, tc.wantSub) {
				t.Errorf("sub-job %+v, want %+v", sub, tc.wantSub)
			}
			if !reflect.DeepEqual(ch.added, tc.wantAdded) || !reflect.DeepEqual(ch.removed, tc.wantRemov) {
				t.Errorf("added %+v removed %+v, want %+v and %+v", ch.added, ch.removed, tc.wantAdded, tc.wantRemov)
			}
			if ch.subJobChanged != (tc.changed || !tc.found) {
				t.Errorf("sub-job changed: %v", ch.subJobChanged)
			}
		})
	}
}

func TestSuccessChangeApply(t *testing.T) {
	sk := NewSketch()
	sk.Add(time.Second)
	ch := successChange{
		removed: &completion{At: t0.Add(1500 * time.Millisecond), Duration: time.Second},
		added:   &completion{At: t0.Add(300 * time.Millisecond), Duration: 2 * time.Second},
	}
	deltas := ch.apply(sk)
	if want := map[time.Time]int64{t0.Add(time.Second): -1, t0: 1}; !reflect.DeepEqual(deltas, want) {
		t.Fatalf("deltas %v, want %v", deltas, want)
	}
	if sk.Count() != 1 || !within(sk.Quantile(0.5), 2*time.Second) {
		t.Fatalf("sketch after the replacement: %d values, p50 %s", sk.Count(), sk.Quantile(0.5))
	}
	// Within one second the replacement moves nothing.
	same := successChange{removed: &completion{At: t0, Duration: 1}, added: &completion{At: t0.Add(time.Millisecond), Duration: 1}}
	if d := same.apply(NewSketch()); len(d) != 0 {
		t.Fatalf("deltas within one bucket: %v", d)
	}
}

func TestFoldFailure(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stored     string
		text       string
		wantStored string
		wantChange errorChange
		wantDupe   int64
	}{
		{"first failure of an attempt", "", "boom", "boom", errorChange{added: "boom", attemptChanged: true}, 0},
		{"same attempt, same text", "boom", "boom", "boom", errorChange{}, 1},
		{"same attempt, greater text", "boom", "crash", "boom", errorChange{}, 1},
		{"same attempt, lesser text", "boom", "abort", "abort", errorChange{added: "abort", removed: "boom", attemptChanged: true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Record
			a := AttemptRecord{Error: tc.stored}
			ch := foldFailure(&r, &a, tc.text)
			if a.Error != tc.wantStored || ch != tc.wantChange || r.Duplicates != tc.wantDupe {
				t.Fatalf("stored %q, change %+v, duplicates %d", a.Error, ch, r.Duplicates)
			}
		})
	}
}

func TestFoldTimeout(t *testing.T) {
	var r Record
	var a AttemptRecord
	if !foldTimeout(&r, &a) || r.TimedOut != 1 {
		t.Fatalf("first time-out: %+v", r)
	}
	if foldTimeout(&r, &a) || r.TimedOut != 1 {
		t.Fatalf("second time-out of the same attempt counted: %+v", r)
	}
}

func TestStepRules(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var r Record
	r.applyStep1Completed(job.Step1Completed{Attempt: 2, At: at(5).Add(1234 * time.Nanosecond)})
	r.applyStep1Completed(job.Step1Completed{Attempt: 1, At: at(3)})
	r.applyStep1Completed(job.Step1Completed{Attempt: 3, At: at(9)})
	if !r.Step1Done.Equal(at(3)) || r.Step1Attempts != 3 {
		t.Fatalf("step 1: done %s, attempts %d; want the earliest and the highest", r.Step1Done, r.Step1Attempts)
	}
	r.applyStep3Completed(job.Step3Completed{Attempt: 1, At: at(30)})
	r.applyStep3Completed(job.Step3Completed{Attempt: 1, At: at(29)})
	if !r.Step3Done.Equal(at(29)) {
		t.Fatalf("step 3 done %s", r.Step3Done)
	}
	if !r.applyEnd(OutcomeCompleted, at(40), job.Counts{Succeeded: 3}) {
		t.Fatal("end not applied")
	}
	if r.applyEnd(OutcomeCancelled, at(50), job.Counts{Succeeded: 9}) || r.Outcome != OutcomeCompleted || !r.EndedAt.Equal(at(40)) || r.Final.Succeeded != 3 {
		t.Fatalf("a second end applied: %+v", r)
	}
	// Stored times have microsecond precision.
	r.applyJobStarted(job.JobStarted{Tenant: "acme", Type: "t", At: at(1).Add(999 * time.Nanosecond)})
	if !r.CreatedAt.Equal(at(1)) || !r.Started() {
		t.Fatalf("created %s", r.CreatedAt)
	}
}

func TestStepDurations(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	full := Record{CreatedAt: at(0), Step1Done: at(2), Step2Start: at(3), Step2Done: at(10), Step3Done: at(12), EndedAt: at(13), Outcome: OutcomeCompleted}
	for _, tc := range []struct {
		name  string
		rec   Record
		steps [3]time.Duration
		ok    [3]bool
		run   time.Duration
		ended bool
	}{
		{"completed: step 3 ends with the job", full, [3]time.Duration{2 * time.Second, 7 * time.Second, 3 * time.Second}, [3]bool{true, true, true}, 13 * time.Second, true},
		{"step 3 done, end not seen", func() Record { r := full; r.EndedAt, r.Outcome = time.Time{}, ""; return r }(),
			[3]time.Duration{2 * time.Second, 7 * time.Second, 2 * time.Second}, [3]bool{true, true, true}, 0, false},
		{"failed in step 3: no step 3 duration", func() Record { r := full; r.Step3Done, r.Outcome = time.Time{}, OutcomeFailed; return r }(),
			[3]time.Duration{2 * time.Second, 7 * time.Second}, [3]bool{true, true, false}, 13 * time.Second, true},
		{"JobStarted missing", func() Record { r := full; r.CreatedAt = time.Time{}; return r }(),
			[3]time.Duration{0, 7 * time.Second, 3 * time.Second}, [3]bool{false, true, true}, 0, false},
		{"a worker clock behind the manager's counts as zero", Record{CreatedAt: at(5), Step1Done: at(4)},
			[3]time.Duration{}, [3]bool{true}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			steps, ok, run, ended := tc.rec.stepDurations()
			if steps != tc.steps || ok != tc.ok || run != tc.run || ended != tc.ended {
				t.Fatalf("got %v %v %s %v", steps, ok, run, ended)
			}
		})
	}
}

func TestCounters(t *testing.T) {
	live := Record{Total: 10, Succeeded: 4, SubJobs: 6, SubJobAttempts: 9, Step1Attempts: 2, Step3Attempts: 0, TimedOut: 2, Duplicates: 3}
	for _, tc := range []struct {
		name string
		rec  Record
		want counters
	}{
		{"running: what was seen", live,
			counters{Total: 10, Succeeded: 4, Attempts: 11, Retries: 4, TimedOut: 2, Duplicates: 3}},
		{"step 2 closed: the manager's counts then", func() Record { r := live; r.Step2Closed, r.Step2Succeeded, r.Step2Failed = true, 8, 2; return r }(),
			counters{Total: 10, Succeeded: 8, Failed: 2, Attempts: 11, Retries: 4, TimedOut: 2, Duplicates: 3}},
		{"ended: the manager's final counts", func() Record {
			r := live
			r.Step2Closed, r.Step2Succeeded = true, 8
			r.Outcome, r.Final = OutcomeCompleted, job.Counts{Total: 10, Succeeded: 9, Failed: 1, Retries: 7, TimedOut: 5, Duplicates: 6, Late: 2}
			return r
		}(), counters{Total: 10, Succeeded: 9, Failed: 1, Attempts: 11, Retries: 7, TimedOut: 5, Duplicates: 6, Late: 2}},
		{"cancelled before the split: no total", Record{Outcome: OutcomeCancelled, Step1Attempts: 1}, counters{Attempts: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.rec.counters(); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNormalizeError(t *testing.T) {
	long := strings.Repeat("é", MaxErrorLength+10)
	for _, tc := range []struct{ in, want string }{
		{"boom", "boom"},
		{"  connection\treset\r\n by   peer \n", "connection reset by peer"},
		{"nul\x00byte", "nul byte"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"", "(no message)"},
		{" \n\t ", "(no message)"},
		{long, strings.Repeat("é", MaxErrorLength)},
		{strings.Repeat("a", MaxErrorLength-1) + " b", strings.Repeat("a", MaxErrorLength-1)},
	} {
		if got := normalizeError(tc.in); got != tc.want {
			t.Errorf("normalizeError(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCompactErrors(t *testing.T) {
	e := func(text string, n int64) ErrorCount { return ErrorCount{Error: text, Count: n} }
	for _, tc := range []struct {
		name    string
		in      []ErrorCount
		keep    int
		want    []ErrorCount
		changed bool
	}{
		{"few enough", []ErrorCount{e("b", 1), e("a", 2)}, 3, []ErrorCount{e("b", 1), e("a", 2)}, false},
		{"zero counts go", []ErrorCount{e("b", 0), e("a", 2)}, 3, []ErrorCount{e("a", 2)}, true},
		{"the rest counted together", []ErrorCount{e("d", 1), e("c", 5), e("b", 1), e("a", 1)}, 2,
			[]ErrorCount{e("c", 5), e(OtherErrors, 2), e("a", 1)}, true},
		{"an existing other row takes the rest", []ErrorCount{e(OtherErrors, 1), e("c", 5), e("b", 1), e("a", 1)}, 2,
			[]ErrorCount{e("c", 5), e(OtherErrors, 3)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := compactErrors(slices.Clone(tc.in), tc.keep)
			if !reflect.DeepEqual(got, tc.want) || changed != tc.changed {
				t.Fatalf("got %v (changed %v), want %v (%v)", got, changed, tc.want, tc.changed)
			}
		})
	}
}

func TestBucketWidth(t *testing.T) {
	for _, tc := range []struct {
		span, min, want time.Duration
	}{
		{0, 0, time.Second},
		{(MaxBuckets - 1) * time.Second, 0, time.Second},
		{MaxBuckets * time.Second, 0, 2 * time.Second},
		{time.Hour, 0, 30 * time.Second}, // 240 buckets of 15s would need one more for the alignment
		{time.Hour, time.Minute, time.Minute},
		{time.Hour, 90 * time.Second, 2 * time.Minute},
		{30 * 24 * time.Hour, 0, 6 * time.Hour},
		{365 * 24 * time.Hour, 0, 2 * 24 * time.Hour},
		{0, 500 * time.Millisecond, time.Second},
	} {
		first := t0
		got := bucketWidth(first, first.Add(tc.span), tc.min)
		if got != tc.want {
			t.Errorf("span %s, min %s: width %s, want %s", tc.span, tc.min, got, tc.want)
		}
		if n := alignDown(first.Add(tc.span), got).Sub(alignDown(first, got))/got + 1; n > MaxBuckets {
			t.Errorf("span %s: %d buckets", tc.span, n)
		}
	}
}

func TestFillBuckets(t *testing.T) {
	b := func(s int, n int64) Bucket {
		return Bucket{Start: t0.Add(time.Duration(s) * time.Second), Completed: n}
	}
	got := fillBuckets([]Bucket{b(0, 2), b(10, 1), b(25, 4)}, 5*time.Second)
	want := []Bucket{b(0, 2), b(5, 0), b(10, 1), b(15, 0), b(20, 0), b(25, 4)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if fillBuckets(nil, time.Second) != nil {
		t.Fatal("an empty series filled")
	}
}

func within(got, want time.Duration) bool {
	d := got - want
	if d < 0 {
		d = -d
	}
	return float64(d) <= RelativeAccuracy*float64(want)+float64(time.Microsecond)
}

func TestSketch(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var values []time.Duration
	sk := NewSketch()
	for range 10_000 {
		// Log-uniform from 100µs to 100s, as run times are spread.
		d := time.Duration(float64(100*time.Microsecond) * math.Pow(10, rnd.Float64()*6))
		values = append(values, d.Truncate(time.Microsecond))
		sk.Add(d)
	}
	slices.Sort(values)
	for _, q := range []float64{0, 0.5, 0.95, 0.99, 1} {
		want := values[int(q*float64(len(values)-1))]
		if got := sk.Quantile(q); !within(got, want) {
			t.Errorf("p%v: %s, want %s within 1%%", q*100, got, want)
		}
	}

	t.Run("encode and decode", func(t *testing.T) {
		back, err := DecodeSketch(sk.Encode())
		if err != nil {
			t.Fatal(err)
		}
		if back.Count() != sk.Count() || back.Quantile(0.99) != sk.Quantile(0.99) || back.Quantile(0.5) != sk.Quantile(0.5) {
			t.Fatalf("decoded %d values, p99 %s; want %d, %s", back.Count(), back.Quantile(0.99), sk.Count(), sk.Quantile(0.99))
		}
		empty, err := DecodeSketch(nil)
		if err != nil || empty.Count() != 0 || empty.Quantile(0.5) != 0 || empty.Encode() != nil {
			t.Fatalf("empty sketch: %v", err)
		}
		// A sketch of another accuracy cannot be merged into these.
		other, err := ddsketch.LogUnboundedDenseDDSketch(0.05)
		if err != nil {
			t.Fatal(err)
		}
		_ = other.Add(1000)
		var b []byte
		other.Encode(&b, false)
		if err := NewSketch().MergeEncoded(b); err == nil {
			t.Fatal("a sketch of another accuracy merged")
		}
	})
	t.Run("merge equals one sketch of everything", func(t *testing.T) {
		a, b := NewSketch(), NewSketch()
		for i, v := range values {
			if i%3 == 0 {
				a.Add(v)
			} else {
				b.Add(v)
			}
		}
		merged := NewSketch()
		if err := merged.MergeEncoded(a.Encode()); err != nil {
			t.Fatal(err)
		}
		if err := merged.Merge(b); err != nil {
			t.Fatal(err)
		}
		for _, q := range []float64{0.5, 0.95, 0.99} {
			if merged.Quantile(q) != sk.Quantile(q) {
				t.Errorf("p%v of the merge %s, of one sketch %s", q*100, merged.Quantile(q), sk.Quantile(q))
			}
		}
	})
	t.Run("remove undoes add", func(t *testing.T) {
		want, got := NewSketch(), NewSketch()
		for i, v := range values[:1000] {
			want.Add(v)
			got.Add(v)
			if i%2 == 0 {
				got.Add(time.Duration(i) * time.Hour)
			}
		}
		for i := range 1000 {
			if i%2 == 0 {
				got.Remove(time.Duration(i) * time.Hour)
			}
		}
		back, err := DecodeSketch(got.Encode())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []*Sketch{got, back} {
			if s.Count() != want.Count() {
				t.Fatalf("%d values after removing, want %d", s.Count(), want.Count())
			}
			for q := 0.0; q <= 1; q += 0.01 {
				if s.Quantile(q) != want.Quantile(q) {
					t.Fatalf("p%v after removing: %s, want %s", q*100, s.Quantile(q), want.Quantile(q))
				}
			}
		}
		one := NewSketch()
		one.Add(0)
		one.Remove(0)
		if one.Count() != 0 || one.Encode() != nil {
			t.Fatal("removing the only value left something")
		}
	})
}
