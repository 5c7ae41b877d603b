package job_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		name string
		b    job.Backoff
		next int
		want time.Duration
	}{
		{"first attempt never waits", job.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}, 1, 0},
		{"attempt zero never waits", job.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}, 0, 0},
		{"first retry waits initial", job.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}, 2, time.Second},
		{"second retry doubles", job.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}, 3, 2 * time.Second},
		{"third retry doubles again", job.Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2}, 4, 4 * time.Second},
		{"capped at max", job.Backoff{Initial: time.Second, Max: 5 * time.Second, Multiplier: 2}, 5, 5 * time.Second},
		{"capped far beyond", job.Backoff{Initial: time.Second, Max: 5 * time.Second, Multiplier: 2}, 60, 5 * time.Second},
		{"initial above max is capped", job.Backoff{Initial: time.Minute, Max: time.Second, Multiplier: 2}, 2, time.Second},
		{"multiplier one is constant", job.Backoff{Initial: 3 * time.Second, Max: time.Minute, Multiplier: 1}, 7, 3 * time.Second},
		{"fractional multiplier", job.Backoff{Initial: 2 * time.Second, Max: time.Minute, Multiplier: 1.5}, 3, 3 * time.Second},
		{"no max means uncapped", job.Backoff{Initial: time.Second, Multiplier: 10}, 4, 100 * time.Second},
		{"zero initial is immediate", job.Backoff{Multiplier: 2, Max: time.Minute}, 5, 0},
		{"negative initial is immediate", job.Backoff{Initial: -time.Second, Multiplier: 2}, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.next); got != tt.want {
				t.Errorf("%+v.Delay(%d) = %s, want %s", tt.b, tt.next, got, tt.want)
			}
		})
	}
}

// An uncapped exponential backoff must saturate, never overflow into a negative (immediate) delay.
func TestBackoffDelayNeverNegative(t *testing.T) {
	b := job.Backoff{Initial: time.Second, Multiplier: 2}
	prev := time.Duration(0)
	for next := 1; next <= 200; next++ {
		d := b.Delay(next)
		if d < 0 {
			t.Fatalf("Delay(%d) = %s, negative", next, d)
		}
		if d < prev {
			t.Fatalf("Delay(%d) = %s shrank from %s", next, d, prev)
		}
		prev = d
	}
	if got := (job.Backoff{Initial: time.Second, Multiplier: math.Inf(1)}).Delay(3); got < 0 {
		t.Fatalf("infinite multiplier gives negative delay %s", got)
	}
}

func validPolicy() job.Policy {
	return job.Policy{
		SubJobTimeout: time.Minute,
		StepTimeout:   time.Minute,
		MaxAttempts:   1,
		Backoff:       job.Backoff{Initial: 0, Max: 0, Multiplier: 1},
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*job.Policy)
		wantErr []string // substrings; nil means valid
	}{
		{"valid", func(*job.Policy) {}, nil},
		{"default is valid", func(p *job.Policy) { *p = job.DefaultPolicy() }, nil},
		{"percent bounds inclusive", func(p *job.Policy) { p.ToleratedFailurePercent = 100 }, nil},
		{"zero subjob timeout", func(p *job.Policy) { p.SubJobTimeout = 0 }, []string{"subjob timeout"}},
		{"negative subjob timeout", func(p *job.Policy) { p.SubJobTimeout = -time.Second }, []string{"subjob timeout"}},
		{"zero step timeout", func(p *job.Policy) { p.StepTimeout = 0 }, []string{"step timeout"}},
		{"zero attempts", func(p *job.Policy) { p.MaxAttempts = 0 }, []string{"max attempts"}},
		{"negative initial", func(p *job.Policy) { p.Backoff.Initial = -1 }, []string{"backoff"}},
		{"negative max", func(p *job.Policy) { p.Backoff.Max = -1 }, []string{"backoff"}},
		{"multiplier below one", func(p *job.Policy) { p.Backoff.Multiplier = 0.5 }, []string{"backoff"}},
		{"negative tolerated", func(p *job.Policy) { p.ToleratedFailures = -1 }, []string{"tolerated failures"}},
		{"negative percent", func(p *job.Policy) { p.ToleratedFailurePercent = -0.1 }, []string{"percent"}},
		{"percent above 100", func(p *job.Policy) { p.ToleratedFailurePercent = 100.5 }, []string{"percent"}},
		{"explicit command size", func(p *job.Policy) { p.SubJobsPerCommand = job.MaxSubJobsPerCommand }, nil},
		{"negative command size", func(p *job.Policy) { p.SubJobsPerCommand = -1 }, []string{"subjobs per command"}},
		{"command size above the bound", func(p *job.Policy) { p.SubJobsPerCommand = job.MaxSubJobsPerCommand + 1 }, []string{"subjobs per command"}},
		{"every error is reported", func(p *job.Policy) { *p = job.Policy{ToleratedFailures: -1} },
			[]string{"subjob timeout", "step timeout", "max attempts", "backoff", "tolerated failures"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validPolicy()
			tt.mutate(&p)
			err := p.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors mentioning %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestPolicyWithDefaults(t *testing.T) {
	d := job.DefaultPolicy()
	if got := (job.Policy{}).WithDefaults(); got != d {
		t.Fatalf("zero policy WithDefaults = %+v, want %+v", got, d)
	}
	custom := job.Policy{SubJobTimeout: time.Second, MaxAttempts: 7, Backoff: job.Backoff{Max: time.Second}, ToleratedFailures: 2}
	got := custom.WithDefaults()
	if got.SubJobTimeout != time.Second || got.MaxAttempts != 7 || got.ToleratedFailures != 2 {
		t.Errorf("WithDefaults overwrote set fields: %+v", got)
	}
	if got.StepTimeout != d.StepTimeout {
		t.Errorf("StepTimeout = %s, want default %s", got.StepTimeout, d.StepTimeout)
	}
	if got.Backoff != (job.Backoff{Max: time.Second, Multiplier: 1}) {
		t.Errorf("partial backoff = %+v, want only Multiplier filled with 1", got.Backoff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("defaulted policy invalid: %v", err)
	}
	// An explicit "no wait" backoff survives.
	noWait := job.Policy{Backoff: job.Backoff{Multiplier: 1}}.WithDefaults()
	if noWait.Backoff.Initial != 0 {
		t.Errorf("explicit zero initial replaced: %+v", noWait.Backoff)
	}
}

func TestCommandSize(t *testing.T) {
	tests := []struct {
		name     string
		explicit int
		timeout  time.Duration
		total    int64
		want     int
	}{
		{"empty job", 0, time.Second, 0, 1},
		{"small job: one sub-job per command", 0, time.Second, 1000, 1},
		{"at least 1,024 commands", 0, time.Second, 2047, 1},
		{"twice that: two per command", 0, time.Second, 2048, 2},
		{"10,000 sub-jobs", 0, time.Minute, 10_000, 9},
		{"capped at 32", 0, time.Second, 1_000_000, 32},
		{"20 minutes of worst case at most: default time-out", 0, 5 * time.Minute, 10_000, 4},
		{"20 minutes of worst case at most: long time-out", 0, 30 * time.Minute, 1_000_000, 1},
		{"explicit wins over size", 5, time.Second, 10, 5},
		{"explicit wins over time", 32, time.Hour, 10, 32},
		{"explicit one", 1, time.Second, 1_000_000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := job.Policy{SubJobsPerCommand: tt.explicit, SubJobTimeout: tt.timeout}
			if got := p.CommandSize(tt.total); got != tt.want {
				t.Fatalf("CommandSize(%d) with %d per command, time-out %s = %d, want %d", tt.total, tt.explicit, tt.timeout, got, tt.want)
			}
		})
	}
}

func TestFailureAllowance(t *testing.T) {
	tests := []struct {
		count   int64
		percent float64
		total   int64
		want    int64
	}{
		{0, 0, 100, 0},
		{3, 0, 100, 3},
		{0, 10, 100, 10},
		{0, 10, 99, 9}, // floor
		{0, 10, 9, 0},
		{5, 10, 100, 10}, // larger wins
		{20, 10, 100, 20},
		{0, 100, 42, 42},
		{2, 50, 0, 2},
		{0, 33.3, 1000, 333},
		{0, 7, 100, 7},
	}
	for _, tt := range tests {
		p := job.Policy{ToleratedFailures: tt.count, ToleratedFailurePercent: tt.percent}
		if got := p.FailureAllowance(tt.total); got != tt.want {
			t.Errorf("FailureAllowance(count=%d, pct=%g, total=%d) = %d, want %d", tt.count, tt.percent, tt.total, got, tt.want)
		}
	}
}

func TestEffectsMerge(t *testing.T) {
	ev := func(id string) job.Message { return job.JobCompleted{JobID: id} }
	cmd := func(i int64) job.Message {
		return job.RunSubJobs{JobID: "j", Runs: []job.SubJobRun{{Index: i, Attempt: 1}}}
	}
	tests := []struct {
		name   string
		a, b   job.Effects
		want   job.Range
		events int
		cmds   int
	}{
		{"empty into empty", job.Effects{}, job.Effects{}, job.Range{}, 0, 0},
		{"range into empty", job.Effects{}, job.Effects{Dispatch: job.Range{From: 3, To: 5}}, job.Range{From: 3, To: 5}, 0, 0},
		{"empty into range", job.Effects{Dispatch: job.Range{From: 3, To: 5}}, job.Effects{}, job.Range{From: 3, To: 5}, 0, 0},
		{"consecutive ranges join", job.Effects{Dispatch: job.Range{From: 0, To: 4}}, job.Effects{Dispatch: job.Range{From: 4, To: 9}}, job.Range{From: 0, To: 9}, 0, 0},
		{"empty range is ignored wherever it is", job.Effects{Dispatch: job.Range{From: 0, To: 4}}, job.Effects{Dispatch: job.Range{From: 7, To: 7}}, job.Range{From: 0, To: 4}, 0, 0},
		{"events and commands append", job.Effects{Events: []job.Message{ev("a")}, Commands: []job.Message{cmd(1)}},
			job.Effects{Events: []job.Message{ev("b"), ev("c")}, Commands: []job.Message{cmd(2)}}, job.Range{}, 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.a
			a.Merge(tt.b)
			if a.Dispatch.Len() != tt.want.Len() || (tt.want.Len() > 0 && a.Dispatch != tt.want) {
				t.Errorf("Dispatch = %+v, want %+v", a.Dispatch, tt.want)
			}
			if len(a.Events) != tt.events || len(a.Commands) != tt.cmds {
				t.Errorf("got %d events %d commands, want %d and %d", len(a.Events), len(a.Commands), tt.events, tt.cmds)
			}
		})
	}
	t.Run("order kept", func(t *testing.T) {
		a := job.Effects{Events: []job.Message{ev("a")}}
		a.Merge(job.Effects{Events: []job.Message{ev("b")}})
		if a.Events[0].JobKey() != "a" || a.Events[1].JobKey() != "b" {
			t.Errorf("events out of order: %v", a.Events)
		}
	})
	for _, bad := range []struct{ a, b job.Range }{
		{job.Range{From: 0, To: 4}, job.Range{From: 5, To: 9}}, // gap
		{job.Range{From: 4, To: 8}, job.Range{From: 0, To: 4}}, // reversed
		{job.Range{From: 0, To: 4}, job.Range{From: 2, To: 6}}, // overlap
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Merge(%v, %v) did not panic", bad.a, bad.b)
				}
			}()
			e := job.Effects{Dispatch: bad.a}
			e.Merge(job.Effects{Dispatch: bad.b})
		}()
	}
}

func TestRangeLen(t *testing.T) {
	for _, tt := range []struct {
		r    job.Range
		want int64
	}{{job.Range{}, 0}, {job.Range{From: 2, To: 5}, 3}, {job.Range{From: 5, To: 2}, 0}} {
		if got := tt.r.Len(); got != tt.want {
			t.Errorf("%+v.Len() = %d, want %d", tt.r, got, tt.want)
		}
	}
}

func TestParseStates(t *testing.T) {
	for _, s := range []job.State{job.StatePending, job.StateStep1Running, job.StateStep2Running, job.StateStep3Running, job.StateCompleted, job.StateFailed, job.StateCancelled} {
		got, err := job.ParseState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := job.ParseState("running"); err == nil {
		t.Error("ParseState accepted an unknown state")
	}
	for _, s := range []job.SubJobState{job.SubJobPending, job.SubJobRunning, job.SubJobRetryWait, job.SubJobSucceeded, job.SubJobFailed} {
		got, err := job.ParseSubJobState(string(s))
		if err != nil || got != s {
			t.Errorf("ParseSubJobState(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := job.ParseSubJobState(""); err == nil {
		t.Error("ParseSubJobState accepted the empty state")
	}
	terminal := map[job.State]bool{job.StateCompleted: true, job.StateFailed: true, job.StateCancelled: true}
	steps := map[job.State]int{job.StateStep1Running: 1, job.StateStep2Running: 2, job.StateStep3Running: 3}
	for _, s := range []job.State{job.StatePending, job.StateStep1Running, job.StateStep2Running, job.StateStep3Running, job.StateCompleted, job.StateFailed, job.StateCancelled} {
		if s.Terminal() != terminal[s] {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
		if s.Step() != steps[s] {
			t.Errorf("%s.Step() = %d, want %d", s, s.Step(), steps[s])
		}
	}
	if !job.SubJobSucceeded.Finished() || !job.SubJobFailed.Finished() || job.SubJobRunning.Finished() || job.SubJobRetryWait.Finished() || job.SubJobPending.Finished() {
		t.Error("SubJobState.Finished is wrong")
	}
	for o, want := range map[job.Outcome]string{job.Applied: "applied", job.Duplicate: "duplicate", job.Late: "late", job.Outcome(9): "outcome(9)"} {
		if o.String() != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", int(o), o.String(), want)
		}
	}
}
