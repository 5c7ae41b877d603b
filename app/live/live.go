// Package live turns the event log into live views of jobs for front ends. Log events only say "job X
// changed"; the hub then reads the job from the store, the source of truth, and sends each subscriber
// what changed. Reading instead of replaying events makes the views exact on every transport (duplicates,
// reordering and lost notifications cannot skew them) and lets progress be coalesced: a job finishing
// thousands of sub-jobs a second yields a few updates a second.
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Kind says what an update reports.
type Kind string

const (
	// KindSnapshot is the first update of every subscription: the job as it is.
	KindSnapshot Kind = "SNAPSHOT"
	// KindStepStarted: the job moved to another step (Update.Step).
	KindStepStarted Kind = "STEP_STARTED"
	// KindProgress: counters changed within the same step.
	KindProgress  Kind = "PROGRESS"
	KindCompleted Kind = "COMPLETED"
	KindFailed    Kind = "FAILED"
	KindCancelled Kind = "CANCELLED"
)

// Update is one message of a job's live stream. Seq is the job's Version: strictly increasing within a
// stream, so a client that reconnects passes the last Seq it saw and receives only what is newer.
type Update struct {
	Seq  int64
	Kind Kind
	// Step is the step the job is in (0 before step 1 and after the job ended).
	Step int
	// Job is a copy read from the store; receivers must not change it.
	Job *job.Job
}

// Config tunes the hub; zero fields take the defaults.
type Config struct {
	// ProgressInterval is the least time between two progress reads of one job (default 250ms): at most
	// four progress updates a second per job. State changes are read at once.
	ProgressInterval time.Duration
	// Refresh re-reads a watched job that had no notification for this long (default 5s), so that a
	// notification lost by a transport delays an update instead of losing it.
	Refresh time.Duration
	// ListInterval is how often the coarse list feed sends what changed (default 500ms).
	ListInterval time.Duration
}

func (c Config) withDefaults() Config {
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 250 * time.Millisecond
	}
	if c.Refresh <= 0 {
		c.Refresh = 5 * time.Second
	}
	if c.ListInterval <= 0 {
		c.ListInterval = 500 * time.Millisecond
	}
	return c
}

// Hub fans job changes out to live subscribers. One process has one hub, fed by its own subscription to
// the event log (Notify), so every API process serves live views whichever process runs the manager.
type Hub struct {
	reader job.Reader
	cfg    Config
	logger *slog.Logger

	ctx    context.Context // the hub's life: Close ends every stream
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool // set under mu before waiting, so no goroutine starts after Close began
	watches map[string]*watch
	lists   map[*listSubscriber]struct{}
	dirty   map[string]struct{} // jobs changed since the list feed last ran
	listOn  bool
	listHit chan struct{}
}

// NewHub refuses a nil reader.
func NewHub(reader job.Reader, cfg Config, logger *slog.Logger) (*Hub, error) {
	if reader == nil {
		return nil, errors.New("live hub: reader is required")
	}
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		reader: reader, cfg: cfg.withDefaults(), logger: logger, ctx: ctx, cancel: cancel,
		watches: map[string]*watch{}, lists: map[*listSubscriber]struct{}{}, dirty: map[string]struct{}{},
		listHit: make(chan struct{}, 1),
	}, nil
}

// ErrClosed: the hub was closed (the process is shutting down).
var ErrClosed = errors.New("live hub is closed")

// Close ends every stream (their channels close) and waits for the hub's goroutines.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	h.cancel()
	h.mu.Unlock()
	h.wg.Wait()
}

// spawnLocked runs fn on a goroutine Close waits for, unless the hub is closed. h.mu must be held.
func (h *Hub) spawnLocked(fn func()) bool {
	if h.closed {
		return false
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		fn()
	}()
	return true
}

func (h *Hub) spawn(fn func()) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.spawnLocked(fn)
}

// Notify tells the hub that a job changed. stateChange marks events that change the job's state (the
// manager's events): they are read at once; other changes are coalesced. Notify never blocks.
func (h *Hub) Notify(jobID string, stateChange bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if w := h.watches[jobID]; w != nil {
		w.poke(stateChange)
	}
	if len(h.lists) > 0 {
		h.dirty[jobID] = struct{}{}
		select {
		case h.listHit <- struct{}{}:
		default:
		}
	}
}

// Subscribe streams the live view of one job: a snapshot first (unless afterSeq is already the job's
// current version), then updates with a greater Seq. The channel closes after the update that reports
// a terminal state, when ctx ends or when the hub closes. A job of another tenant is job.ErrNotFound;
// an empty tenant sees every job.
func (h *Hub) Subscribe(ctx context.Context, jobID, tenant string, afterSeq int64) (<-chan Update, error) {
	if h.ctx.Err() != nil {
		return nil, ErrClosed
	}
	j, err := h.reader.GetJob(ctx, jobID)
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", jobID, err)
	}
	if tenant != "" && j.Tenant != tenant {
		return nil, fmt.Errorf("job %s: %w", jobID, job.ErrNotFound)
	}
	sub := newSubscriber(afterSeq)
	if j.Version() > afterSeq {
		sub.offer(Update{Seq: j.Version(), Kind: KindSnapshot, Step: j.State.Step(), Job: j})
	} else if j.State.Terminal() {
		sub.finish()
	}
	if !sub.finished() {
		h.attach(jobID, sub, j)
	}
	if !h.spawn(func() {
		sub.forward(ctx, h.ctx)
		h.detach(jobID, sub)
	}) {
		return nil, ErrClosed
	}
	return sub.out, nil
}

func (h *Hub) attach(jobID string, sub *subscriber, seen *job.Job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.watches[jobID]
	if w == nil {
		w = newWatch(jobID)
		w.last = seen // the first read reports what changed since the subscriber's own read
		h.watches[jobID] = w
		h.spawnLocked(func() { h.runWatch(w) })
		w.poke(true) // a change between the caller's read and now would otherwise wait for Refresh
	}
	w.mu.Lock()
	w.subs[sub] = struct{}{}
	last := w.last
	w.mu.Unlock()
	if last != nil && last.Version() > seen.Version() {
		sub.offer(delta(seen, last))
	}
}

func (h *Hub) detach(jobID string, sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := h.watches[jobID]
	if w == nil {
		return
	}
	w.mu.Lock()
	delete(w.subs, sub)
	empty := len(w.subs) == 0
	w.mu.Unlock()
	if empty {
		delete(h.watches, jobID)
		close(w.stop)
	}
}

// runWatch reads one job whenever it is poked (state changes at once, progress at most every
// ProgressInterval) or has been quiet for Refresh, and offers each subscriber what changed.
func (h *Hub) runWatch(w *watch) {
	refresh := time.NewTicker(h.cfg.Refresh)
	defer refresh.Stop()
	var lastRead time.Time
	for {
		select {
		case <-w.stop:
			return
		case <-h.ctx.Done():
			return
		case <-w.urgent:
		case <-w.wake:
			if wait := h.cfg.ProgressInterval - time.Since(lastRead); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-w.stop:
					t.Stop()
					return
				case <-h.ctx.Done():
					t.Stop()
					return
				case <-w.urgent:
					t.Stop()
				case <-t.C:
				}
			}
		case <-refresh.C:
			if time.Since(lastRead) < h.cfg.Refresh {
				continue
			}
		}
		lastRead = time.Now()
		j, err := h.reader.GetJob(h.ctx, w.jobID)
		if err != nil {
			if h.ctx.Err() == nil {
				h.logger.Warn("live view: reading a job failed; retrying on the next change", "job", w.jobID, "err", err)
			}
			continue
		}
		w.publish(j)
	}
}

// delta describes the change from prev to cur as one update.
func delta(prev, cur *job.Job) Update {
	u := Update{Seq: cur.Version(), Kind: KindProgress, Step: cur.State.Step(), Job: cur}
	switch {
	case cur.State == job.StateCompleted:
		u.Kind = KindCompleted
	case cur.State == job.StateFailed:
		u.Kind = KindFailed
	case cur.State == job.StateCancelled:
		u.Kind = KindCancelled
	case prev == nil || prev.State != cur.State:
		if cur.State.Step() > 0 {
			u.Kind = KindStepStarted
		}
	}
	return u
}

// watch is the shared reader of one job with subscribers.
type watch struct {
	jobID  string
	wake   chan struct{}
	urgent chan struct{}
	stop   chan struct{}

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	last *job.Job
}

func newWatch(jobID string) *watch {
	return &watch{jobID: jobID, wake: make(chan struct{}, 1), urgent: make(chan struct{}, 1),
		stop: make(chan struct{}), subs: map[*subscriber]struct{}{}}
}

func (w *watch) poke(urgent bool) {
	ch := w.wake
	if urgent {
		ch = w.urgent
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (w *watch) publish(j *job.Job) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last != nil && j.Version() <= w.last.Version() {
		return
	}
	u := delta(w.last, j)
	w.last = j
	for s := range w.subs {
		s.offer(u)
	}
}

// subscriber is one stream. Offers never block the hub: they queue, and consecutive progress updates
// collapse into the newest, so a slow client receives fewer updates, never stale ones and never a
// blocked hub.
type subscriber struct {
	out    chan Update
	signal chan struct{}

	mu      sync.Mutex
	pending []Update
	lastSeq int64
	done    bool // the terminal update is queued (or nothing more will come)
}

func newSubscriber(afterSeq int64) *subscriber {
	return &subscriber{out: make(chan Update), signal: make(chan struct{}, 1), lastSeq: afterSeq}
}

func (s *subscriber) offer(u Update) {
	s.mu.Lock()
	if s.done || u.Seq <= s.lastSeq {
		s.mu.Unlock()
		return
	}
	s.lastSeq = u.Seq
	if n := len(s.pending); n > 0 && s.pending[n-1].Kind == KindProgress && u.Kind == KindProgress {
		s.pending[n-1] = u
	} else {
		s.pending = append(s.pending, u)
	}
	if u.Job.State.Terminal() {
		s.done = true
	}
	s.mu.Unlock()
	s.poke()
}

func (s *subscriber) finish() {
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.poke()
}

func (s *subscriber) finished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

func (s *subscriber) poke() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// forward sends queued updates until the terminal one, or until ctx or the hub ends; then it closes out.
func (s *subscriber) forward(ctx, hubCtx context.Context) {
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
		batch, done := s.pending, s.done
		s.pending = nil
		s.mu.Unlock()
		for _, u := range batch {
			select {
			case s.out <- u:
			case <-ctx.Done():
				return
			case <-hubCtx.Done():
				return
			}
		}
		if done {
			return
		}
	}
}
