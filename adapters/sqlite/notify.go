package sqlite

import (
	"sync"
	"time"
)

// notifier wakes idle subscribers of one DB when a publisher in the same
// process commits, so delivery latency is not bounded below by the poll
// interval. Publishers in other processes are still found by polling.
//
// Each key has a version counter: a waiter remembers the version it saw
// before querying and returns at once if it changed meanwhile, so a signal
// sent between "query found nothing" and "start waiting" is never lost.
type notifier struct {
	mu   sync.Mutex
	keys map[string]*signal
}

type signal struct {
	mu      sync.Mutex
	version uint64
	ch      chan struct{}
}

func newNotifier() *notifier {
	return &notifier{keys: make(map[string]*signal)}
}

func (n *notifier) get(key string) *signal {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, ok := n.keys[key]
	if !ok {
		s = &signal{ch: make(chan struct{})}
		n.keys[key] = s
	}
	return s
}

// Notify wakes every waiter on key.
func (n *notifier) Notify(key string) {
	n.get(key).broadcast()
}

func (s *signal) broadcast() {
	s.mu.Lock()
	s.version++
	close(s.ch)
	s.ch = make(chan struct{})
	s.mu.Unlock()
}

func (s *signal) snapshot() (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version, s.ch
}

// wait blocks until the version differs from seen, timeout elapses, or done
// is closed, and returns the version to remember for the next wait.
func (s *signal) wait(seen uint64, timeout time.Duration, done ...<-chan struct{}) uint64 {
	v, ch := s.snapshot()
	if v != seen {
		return v
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var d0, d1 <-chan struct{}
	if len(done) > 0 {
		d0 = done[0]
	}
	if len(done) > 1 {
		d1 = done[1]
	}
	select {
	case <-ch:
	case <-t.C:
	case <-d0:
	case <-d1:
	}
	v, _ = s.snapshot()
	return v
}

func logKey(topic string) string   { return "log:" + topic }
func queueKey(topic string) string { return "queue:" + topic }
