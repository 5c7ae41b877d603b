package stats_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/stats"
)

// memStore is a stats.Store in memory for the projection's tests. Update holds one lock for the whole
// transaction and does not roll back: the tests' stores never fail.
type memStore struct {
	mu          sync.Mutex
	jobs        map[string]stats.Record
	events      map[[2]string]bool
	subJobs     map[subJobKey]stats.SubJobRecord
	attempts    map[stats.AttemptKey]stats.AttemptRecord
	completions map[string]map[int64]int64 // job → unix second → completions
	errors      map[string]map[string]int64
	// statements counts the calls of Tx methods, the store's statements.
	statements int
}

type subJobKey struct {
	job   string
	index int64
}

func newMemStore() *memStore {
	m := &memStore{}
	m.clear()
	return m
}

func (m *memStore) clear() {
	m.jobs = map[string]stats.Record{}
	m.events = map[[2]string]bool{}
	m.subJobs = map[subJobKey]stats.SubJobRecord{}
	m.attempts = map[stats.AttemptKey]stats.AttemptRecord{}
	m.completions = map[string]map[int64]int64{}
	m.errors = map[string]map[string]int64{}
}

// bookkeeping counts the per-event and per-sub-job rows kept for a job.
func (m *memStore) bookkeeping(jobID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k := range m.events {
		if k[0] == jobID {
			n++
		}
	}
	for k := range m.subJobs {
		if k.job == jobID {
			n++
		}
	}
	for k := range m.attempts {
		if k.JobID == jobID {
			n++
		}
	}
	return n
}

func (m *memStore) Update(ctx context.Context, fn func(ctx context.Context, tx stats.Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fn(ctx, memTx{m})
}

func (m *memStore) Reset(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.clear()
	return nil
}

func (m *memStore) selects(r stats.Record, q stats.Query) bool {
	if q.JobID != "" {
		return r.JobID == q.JobID
	}
	return r.Started() && (q.Tenant == "" || r.Tenant == q.Tenant) && (q.Type == "" || r.Type == q.Type) &&
		(q.CreatedAfter.IsZero() || !r.CreatedAt.Before(q.CreatedAfter)) &&
		(q.CreatedBefore.IsZero() || r.CreatedAt.Before(q.CreatedBefore))
}

func (m *memStore) Jobs(_ context.Context, q stats.Query, fn func(stats.Record) error) error {
	m.mu.Lock()
	var recs []stats.Record
	for _, r := range m.jobs {
		if m.selects(r, q) {
			r.Durations = slices.Clone(r.Durations)
			recs = append(recs, r)
		}
	}
	m.mu.Unlock()
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// seconds sums the completions of the selected jobs per second.
func (m *memStore) seconds(q stats.Query) map[int64]int64 {
	sum := map[int64]int64{}
	for id, byS := range m.completions {
		if r, ok := m.jobs[id]; ok && m.selects(r, q) {
			for s, n := range byS {
				sum[s] += n
			}
		}
	}
	for s, n := range sum {
		if n == 0 {
			delete(sum, s)
		}
	}
	return sum
}

func (m *memStore) CompletionSpan(_ context.Context, q stats.Query) (time.Time, time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var first, last time.Time
	for s := range m.seconds(q) {
		t := time.Unix(s, 0)
		if first.IsZero() || t.Before(first) {
			first = t
		}
		if last.IsZero() || t.After(last) {
			last = t
		}
	}
	return first, last, nil
}

func (m *memStore) Completions(_ context.Context, q stats.Query, width time.Duration) ([]stats.Bucket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := int64(width / time.Second)
	byBucket := map[int64]int64{}
	for s, n := range m.seconds(q) {
		byBucket[s-s%w] += n
	}
	var out []stats.Bucket
	for b, n := range byBucket {
		out = append(out, stats.Bucket{Start: time.Unix(b, 0), Completed: n})
	}
	slices.SortFunc(out, func(a, b stats.Bucket) int { return a.Start.Compare(b.Start) })
	return out, nil
}

func (m *memStore) TopErrors(_ context.Context, q stats.Query, n int) ([]stats.ErrorCount, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sum := map[string]int64{}
	for id, byText := range m.errors {
		if r, ok := m.jobs[id]; ok && m.selects(r, q) {
			for text, c := range byText {
				sum[text] += c
			}
		}
	}
	var out []stats.ErrorCount
	for text, c := range sum {
		if c > 0 {
			out = append(out, stats.ErrorCount{Error: text, Count: c})
		}
	}
	slices.SortFunc(out, func(a, b stats.ErrorCount) int {
		if a.Count != b.Count {
			return int(b.Count - a.Count)
		}
		return strings.Compare(a.Error, b.Error)
	})
	return out[:min(n, len(out))], nil
}

type memTx struct{ m *memStore }

func (t memTx) LockJob(_ context.Context, jobID string) (stats.Record, error) {
	t.m.statements++
	r, ok := t.m.jobs[jobID]
	if !ok {
		r = stats.Record{JobID: jobID}
		t.m.jobs[jobID] = r
	}
	r.Durations = slices.Clone(r.Durations)
	return r, nil
}

func (t memTx) SaveJob(_ context.Context, r stats.Record) error {
	t.m.statements++
	r.Durations = slices.Clone(r.Durations)
	t.m.jobs[r.JobID] = r
	return nil
}

func (t memTx) MarkEvent(_ context.Context, jobID, eventID string) (bool, error) {
	t.m.statements++
	k := [2]string{jobID, eventID}
	if t.m.events[k] {
		return false, nil
	}
	t.m.events[k] = true
	return true, nil
}

func (t memTx) SubJob(_ context.Context, jobID string, index int64) (stats.SubJobRecord, bool, error) {
	t.m.statements++
	s, ok := t.m.subJobs[subJobKey{jobID, index}]
	return s, ok, nil
}

func (t memTx) SaveSubJob(_ context.Context, s stats.SubJobRecord) error {
	t.m.statements++
	t.m.subJobs[subJobKey{s.JobID, s.Index}] = s
	return nil
}

func (t memTx) Attempt(_ context.Context, key stats.AttemptKey) (stats.AttemptRecord, bool, error) {
	t.m.statements++
	a, ok := t.m.attempts[key]
	return a, ok, nil
}

func (t memTx) SaveAttempt(_ context.Context, a stats.AttemptRecord) error {
	t.m.statements++
	t.m.attempts[a.AttemptKey] = a
	return nil
}

func (t memTx) AddCompletions(_ context.Context, jobID string, bucket time.Time, delta int64) error {
	t.m.statements++
	if t.m.completions[jobID] == nil {
		t.m.completions[jobID] = map[int64]int64{}
	}
	t.m.completions[jobID][bucket.Unix()] += delta
	return nil
}

func (t memTx) AddError(_ context.Context, jobID, text string, delta int64) error {
	t.m.statements++
	if t.m.errors[jobID] == nil {
		t.m.errors[jobID] = map[string]int64{}
	}
	t.m.errors[jobID][text] += delta
	return nil
}

func (t memTx) JobErrors(_ context.Context, jobID string) ([]stats.ErrorCount, error) {
	t.m.statements++
	var out []stats.ErrorCount
	for text, c := range t.m.errors[jobID] {
		out = append(out, stats.ErrorCount{Error: text, Count: c})
	}
	return out, nil
}

func (t memTx) ReplaceErrors(_ context.Context, jobID string, errs []stats.ErrorCount) error {
	t.m.statements++
	t.m.errors[jobID] = map[string]int64{}
	for _, e := range errs {
		t.m.errors[jobID][e.Error] = e.Count
	}
	return nil
}

func (t memTx) DropBookkeeping(_ context.Context, jobID string) error {
	t.m.statements++
	for k := range t.m.events {
		if k[0] == jobID {
			delete(t.m.events, k)
		}
	}
	for k := range t.m.subJobs {
		if k.job == jobID {
			delete(t.m.subJobs, k)
		}
	}
	for k := range t.m.attempts {
		if k.JobID == jobID {
			delete(t.m.attempts, k)
		}
	}
	return nil
}
