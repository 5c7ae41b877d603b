package timeline_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/timeline"
)

// memStore is an in-memory timeline.Store with transactions: Update works on a copy and keeps it only
// when fn succeeds, as a database transaction would.
type memStore struct {
	mu sync.Mutex
	st memState
	// failSubJob makes the next SaveSubJob fail, once.
	failSubJob bool
}

type memState struct {
	headers map[string]timeline.Header
	entries map[string][]timeline.Entry // by job, in Pos order
	ids     map[string]bool
	subs    map[string]map[int64]timeline.SubJob
}

var errInjected = errors.New("injected failure")

func newMemStore() *memStore { return &memStore{st: emptyState()} }

func emptyState() memState {
	return memState{headers: map[string]timeline.Header{}, entries: map[string][]timeline.Entry{},
		ids: map[string]bool{}, subs: map[string]map[int64]timeline.SubJob{}}
}

func (s memState) clone() memState {
	c := memState{headers: maps.Clone(s.headers), entries: map[string][]timeline.Entry{}, ids: maps.Clone(s.ids),
		subs: map[string]map[int64]timeline.SubJob{}}
	for k, v := range s.entries {
		c.entries[k] = slices.Clone(v)
	}
	for k, v := range s.subs {
		c.subs[k] = maps.Clone(v)
	}
	return c
}

func (s *memStore) Update(ctx context.Context, fn func(ctx context.Context, tx timeline.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := &memTx{store: s, st: s.st.clone()}
	if err := fn(ctx, tx); err != nil {
		return err
	}
	s.st = tx.st
	return nil
}

func (s *memStore) Reset(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = emptyState()
	return nil
}

func (s *memStore) Summary(_ context.Context, jobID string) (timeline.Summary, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.st.headers[jobID]
	if !ok {
		return timeline.Summary{}, job.ErrNotFound
	}
	sum := timeline.Summary{Header: h, Events: int64(len(s.st.entries[jobID])), SubJobs: map[job.SubJobState]int64{}}
	for _, sj := range s.st.subs[jobID] {
		sum.SubJobs[sj.State]++
	}
	return sum, nil
}

func (s *memStore) Entries(_ context.Context, jobID string, afterPos int64, limit int) ([]timeline.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []timeline.Entry
	for _, e := range s.st.entries[jobID] {
		if e.Pos > afterPos && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *memStore) SubJobs(_ context.Context, jobID string, state job.SubJobState, afterIndex int64, limit int) ([]timeline.SubJob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []timeline.SubJob
	for _, idx := range slices.Sorted(maps.Keys(s.st.subs[jobID])) {
		sj := s.st.subs[jobID][idx]
		if idx > afterIndex && (state == "" || sj.State == state) && len(out) < limit {
			out = append(out, sj)
		}
	}
	return out, nil
}

type memTx struct {
	store *memStore
	st    memState
}

func (t *memTx) LockHeader(_ context.Context, jobID string) (timeline.Header, error) {
	h, ok := t.st.headers[jobID]
	if !ok {
		h = timeline.Header{JobID: jobID}
		t.st.headers[jobID] = h
	}
	return h, nil
}

func (t *memTx) SaveHeader(_ context.Context, h timeline.Header) error {
	if _, ok := t.st.headers[h.JobID]; !ok {
		return errors.New("SaveHeader of a header never locked")
	}
	t.st.headers[h.JobID] = h
	return nil
}

func (t *memTx) Append(_ context.Context, jobID string, e timeline.Entry) (bool, error) {
	if t.st.ids[e.EventID] {
		return false, nil
	}
	t.st.ids[e.EventID] = true
	e.Pos = int64(len(t.st.entries[jobID])) + 1
	t.st.entries[jobID] = append(t.st.entries[jobID], e)
	return true, nil
}

func (t *memTx) SubJobEntries(_ context.Context, jobID string, index int64) ([]timeline.Entry, error) {
	var out []timeline.Entry
	for _, e := range t.st.entries[jobID] {
		if e.Index == index {
			out = append(out, e)
		}
	}
	return out, nil
}

func (t *memTx) SaveSubJob(_ context.Context, jobID string, s timeline.SubJob) error {
	if t.store.failSubJob {
		t.store.failSubJob = false
		return errInjected
	}
	if t.st.subs[jobID] == nil {
		t.st.subs[jobID] = map[int64]timeline.SubJob{}
	}
	t.st.subs[jobID][s.Index] = s
	return nil
}

func (t *memTx) FailWaitingSubJobs(_ context.Context, jobID string) error {
	for idx, sj := range t.st.subs[jobID] {
		if sj.State == job.SubJobRetryWait {
			sj.State, sj.FinishedAt = job.SubJobFailed, sj.LastErrorAt
			t.st.subs[jobID][idx] = sj
		}
	}
	return nil
}
