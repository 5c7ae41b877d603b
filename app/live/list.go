package live

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// ListFilter selects the jobs of a list feed; zero fields match everything except Tenant, which the
// caller sets from who is asking (empty: every tenant, for local use only).
type ListFilter struct {
	Tenant string
	Type   string
	States []job.State
}

func (f ListFilter) matches(j *job.Job) bool {
	return (f.Tenant == "" || j.Tenant == f.Tenant) &&
		(f.Type == "" || j.Type == f.Type) &&
		(len(f.States) == 0 || slices.Contains(f.States, j.State))
}

// SubscribeList streams jobs that changed and match filter, at most once per job every ListInterval:
// a coarse feed for lists and dashboards. It ends when ctx or the hub ends.
func (h *Hub) SubscribeList(ctx context.Context, filter ListFilter) (<-chan *job.Job, error) {
	s := &listSubscriber{filter: filter, out: make(chan *job.Job), signal: make(chan struct{}, 1), pending: map[string]*job.Job{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	h.lists[s] = struct{}{}
	if !h.listOn {
		h.listOn = true
		h.spawnLocked(h.runList)
	}
	h.spawnLocked(func() {
		s.forward(ctx, h.ctx)
		h.mu.Lock()
		delete(h.lists, s)
		h.mu.Unlock()
	})
	return s.out, nil
}

// runList reads each job that changed once per ListInterval and offers it to the list subscribers; it
// stops when none is left.
func (h *Hub) runList() {
	tick := time.NewTicker(h.cfg.ListInterval)
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-tick.C:
		}
		h.mu.Lock()
		if len(h.lists) == 0 {
			h.listOn = false
			clear(h.dirty)
			h.mu.Unlock()
			return
		}
		ids := make([]string, 0, len(h.dirty))
		for id := range h.dirty {
			ids = append(ids, id)
		}
		clear(h.dirty)
		subs := make([]*listSubscriber, 0, len(h.lists))
		for s := range h.lists {
			subs = append(subs, s)
		}
		h.mu.Unlock()
		for _, id := range ids {
			j, err := h.reader.GetJob(h.ctx, id)
			if err != nil {
				continue // gone or unreadable: the next change offers it again
			}
			for _, s := range subs {
				if s.filter.matches(j) {
					s.offer(j)
				}
			}
		}
	}
}

// listSubscriber keeps the newest version of each changed job until the client takes it.
type listSubscriber struct {
	filter ListFilter
	out    chan *job.Job
	signal chan struct{}

	mu      sync.Mutex
	pending map[string]*job.Job
	order   []string
}

func (s *listSubscriber) offer(j *job.Job) {
	s.mu.Lock()
	if _, ok := s.pending[j.ID]; !ok {
		s.order = append(s.order, j.ID)
	}
	s.pending[j.ID] = j
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *listSubscriber) forward(ctx, hubCtx context.Context) {
	defer close(s.out)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hubCtx.Done():
			return
		case <-s.signal:
		}
		s.mu.Lock()
		order, pending := s.order, s.pending
		s.order, s.pending = nil, map[string]*job.Job{}
		s.mu.Unlock()
		for _, id := range order {
			select {
			case s.out <- pending[id]:
			case <-ctx.Done():
				return
			case <-hubCtx.Done():
				return
			}
		}
	}
}
