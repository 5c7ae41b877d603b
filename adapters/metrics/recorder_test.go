package metrics

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// callLog is a Sink that writes down what it is told.
type callLog struct {
	mu    sync.Mutex
	calls []string
}

func (c *callLog) add(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, s)
}

func (c *callLog) Step2Closed(id string, d time.Duration) { c.add(fmt.Sprintf("closed %s %v", id, d)) }
func (c *callLog) Absorbed(id string, o job.Outcome)      { c.add(fmt.Sprintf("absorbed %s %v", id, o)) }
func (c *callLog) JobEnded(id string, st job.State)       { c.add(fmt.Sprintf("ended %s %s", id, st)) }
func (c *callLog) SubJobsFinished(id string, s, f int64) {
	c.add(fmt.Sprintf("finished %s %d %d", id, s, f))
}

func (c *callLog) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

func TestRecorderCountsAndForwards(t *testing.T) {
	early, late := &callLog{}, &callLog{}
	r := NewRecorder(early)
	r.Step2Closed("a", 10*time.Millisecond)
	r.AddSink(late)

	steps := []struct {
		do   func()
		call string // what every sink hears; "" when nothing is forwarded
	}{
		{func() { r.Step2Closed("b", 30*time.Millisecond) }, "closed b 30ms"},
		{func() { r.Step2Closed("c", 20*time.Millisecond) }, "closed c 20ms"},
		{func() { r.Absorbed("a", job.Duplicate) }, "absorbed a duplicate"},
		{func() { r.Absorbed("a", job.Late) }, "absorbed a late"},
		{func() { r.Absorbed("a", job.Late) }, "absorbed a late"},
		{func() { r.SubJobsFinished("a", 3, 1) }, "finished a 3 1"},
		{func() { r.SubJobsFinished("b", 2, 0) }, "finished b 2 0"},
		// Nothing finished: nothing to count or forward.
		{func() { r.SubJobsFinished("b", 0, 0) }, ""},
		{func() { r.JobEnded("a", job.StateCompleted) }, "ended a COMPLETED"},
	}
	var want []string
	for _, s := range steps {
		s.do()
		if s.call != "" {
			want = append(want, s.call)
		}
	}
	if got := early.got(); !slices.Equal(got, append([]string{"closed a 10ms"}, want...)) {
		t.Errorf("first sink heard %q", got)
	}
	if got := late.got(); !slices.Equal(got, want) {
		t.Errorf("sink added later heard %q, want %q", got, want)
	}

	if d, l := r.AbsorbedCounts(); d != 1 || l != 2 {
		t.Errorf("absorbed %d duplicates, %d late; want 1, 2", d, l)
	}
	if s, f := r.SubJobCounts(); s != 5 || f != 1 {
		t.Errorf("finished %d succeeded, %d failed; want 5, 1", s, f)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 10 * time.Millisecond}, {0.5, 20 * time.Millisecond}, {1, 30 * time.Millisecond}} {
		if got := r.FanInQuantile(c.q); got != c.want {
			t.Errorf("fan-in quantile %v = %v, want %v", c.q, got, c.want)
		}
	}
	select {
	case st := <-r.Ended("a"):
		if st != job.StateCompleted {
			t.Errorf("job a ended %s", st)
		}
	default:
		t.Error("Ended does not report a job that already ended")
	}
}

// Sinks are called outside the recorder's lock: one that reads the recorder back does not deadlock.
func TestSinkMayReadTheRecorder(t *testing.T) {
	r := NewRecorder()
	reader := &readingSink{r: r}
	r.AddSink(reader)
	r.Absorbed("a", job.Duplicate)
	r.SubJobsFinished("a", 1, 0)
	if reader.duplicates != 1 || reader.succeeded != 1 {
		t.Fatalf("the sink read %d duplicates, %d succeeded; want 1, 1", reader.duplicates, reader.succeeded)
	}
}

type readingSink struct {
	r                     *Recorder
	duplicates, succeeded int64
}

func (s *readingSink) Step2Closed(string, time.Duration) {}
func (s *readingSink) JobEnded(string, job.State)        {}
func (s *readingSink) Absorbed(string, job.Outcome)      { s.duplicates, _ = s.r.AbsorbedCounts() }
func (s *readingSink) SubJobsFinished(string, int64, int64) {
	s.succeeded, _ = s.r.SubJobCounts()
}
