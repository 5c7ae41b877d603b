// Package metrics records what the manager decides (fan-in latency, absorbed duplicates and late reports,
// jobs ending) in process, for the benchmark, the CLI and, later, Prometheus.
package metrics

import (
	"slices"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Recorder implements manager.Observer.
type Recorder struct {
	mu         sync.Mutex
	fanIn      []time.Duration
	duplicates int64
	late       int64
	ended      map[string]job.State
	waiters    map[string][]chan job.State
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{ended: map[string]job.State{}, waiters: map[string][]chan job.State{}}
}

// maxSamples bounds memory when a process runs many jobs: older samples are dropped.
const maxSamples = 100_000

// Step2Closed implements manager.Observer.
func (r *Recorder) Step2Closed(_ string, fanIn time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fanIn) >= maxSamples {
		r.fanIn = r.fanIn[len(r.fanIn)/2:]
	}
	r.fanIn = append(r.fanIn, fanIn)
}

// Absorbed implements manager.Observer.
func (r *Recorder) Absorbed(_ string, o job.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch o {
	case job.Duplicate:
		r.duplicates++
	case job.Late:
		r.late++
	}
}

// JobEnded implements manager.Observer.
func (r *Recorder) JobEnded(jobID string, state job.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ended) > maxSamples {
		clear(r.ended)
	}
	r.ended[jobID] = state
	for _, ch := range r.waiters[jobID] {
		ch <- state
	}
	delete(r.waiters, jobID)
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

// Absorbed counts duplicates and late reports absorbed so far.
func (r *Recorder) AbsorbedCounts() (duplicates, late int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.duplicates, r.late
}
