// Package metrics records what the manager decides (fan-in latency, absorbed duplicates and late reports,
// sub-jobs finishing, jobs ending) in process, for the benchmark and the CLI, and passes every observation
// on to its sinks (the Prometheus exporter). It also holds the shape of consumer-lag reports that every
// transport adapter produces.
package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Sink receives every observation the Recorder receives, after the Recorder has counted it. Its methods
// are called outside the Recorder's lock, from the goroutines of the manager's reactions, so they must be
// safe for concurrent use and must not block.
type Sink interface {
	Step2Closed(jobID string, fanIn time.Duration)
	Absorbed(jobID string, outcome job.Outcome)
	JobEnded(jobID string, state job.State)
	SubJobsFinished(jobID string, succeeded, failed int64)
}

// Recorder implements manager.Observer.
type Recorder struct {
	mu         sync.Mutex
	fanIn      []time.Duration
	duplicates int64
	late       int64
	succeeded  int64
	failed     int64
	ended      map[string]job.State
	waiters    map[string][]chan job.State
	sinks      []Sink
}

// NewRecorder returns an empty recorder that forwards every observation to sinks.
func NewRecorder(sinks ...Sink) *Recorder {
	return &Recorder{
		ended:   map[string]job.State{},
		waiters: map[string][]chan job.State{},
		sinks:   slices.Clone(sinks),
	}
}

// AddSink forwards every later observation to s as well.
func (r *Recorder) AddSink(s Sink) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A new slice, so that a forwarding call holding the old one is not disturbed.
	r.sinks = append(slices.Clip(r.sinks), s)
}

// maxSamples bounds memory when a process runs many jobs: older samples are dropped.
const maxSamples = 100_000

// Step2Closed implements manager.Observer.
func (r *Recorder) Step2Closed(jobID string, fanIn time.Duration) {
	r.mu.Lock()
	if len(r.fanIn) >= maxSamples {
		r.fanIn = r.fanIn[len(r.fanIn)/2:]
	}
	r.fanIn = append(r.fanIn, fanIn)
	sinks := r.sinks
	r.mu.Unlock()
	for _, s := range sinks {
		s.Step2Closed(jobID, fanIn)
	}
}

// Absorbed implements manager.Observer.
func (r *Recorder) Absorbed(jobID string, o job.Outcome) {
	r.mu.Lock()
	switch o {
	case job.Duplicate:
		r.duplicates++
	case job.Late:
		r.late++
	}
	sinks := r.sinks
	r.mu.Unlock()
	for _, s := range sinks {
		s.Absorbed(jobID, o)
	}
}

// SubJobsFinished records sub-jobs whose outcome became final in one committed reaction: succeeded, and
// failed after their last attempt. Reports absorbed as duplicates or late never reach it.
func (r *Recorder) SubJobsFinished(jobID string, succeeded, failed int64) {
	if succeeded <= 0 && failed <= 0 {
		return
	}
	r.mu.Lock()
	r.succeeded += max(succeeded, 0)
	r.failed += max(failed, 0)
	sinks := r.sinks
	r.mu.Unlock()
	for _, s := range sinks {
		s.SubJobsFinished(jobID, max(succeeded, 0), max(failed, 0))
	}
}

// JobEnded implements manager.Observer.
func (r *Recorder) JobEnded(jobID string, state job.State) {
	r.mu.Lock()
	if len(r.ended) > maxSamples {
		clear(r.ended)
	}
	r.ended[jobID] = state
	for _, ch := range r.waiters[jobID] {
		ch <- state
	}
	delete(r.waiters, jobID)
	sinks := r.sinks
	r.mu.Unlock()
	for _, s := range sinks {
		s.JobEnded(jobID, state)
	}
}

// Ended returns a channel that receives the job's terminal state once this process's manager ends it.
func (r *Recorder) Ended(jobID string) <-chan job.State {
	ch := make(chan job.State, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.ended[jobID]; ok {
		ch <- st
		return ch
	}
	r.waiters[jobID] = append(r.waiters[jobID], ch)
	return ch
}

// FanInQuantile returns the q-quantile (0..1) of recorded fan-in latencies, 0 without samples.
func (r *Recorder) FanInQuantile(q float64) time.Duration {
	r.mu.Lock()
	s := slices.Clone(r.fanIn)
	r.mu.Unlock()
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	i := int(q * float64(len(s)-1))
	return s[i]
}

// AbsorbedCounts counts duplicates and late reports absorbed so far.
func (r *Recorder) AbsorbedCounts() (duplicates, late int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.duplicates, r.late
}

// SubJobCounts counts the sub-jobs that finished so far, by outcome.
func (r *Recorder) SubJobCounts() (succeeded, failed int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.succeeded, r.failed
}
