package graph

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxLimiterKeys bounds the limiter's memory whatever the number of clients: past it, idle buckets are
// dropped, and if none is idle every bucket starts over.
const maxLimiterKeys = 100_000

// limiter is a token bucket per key (an API token's id, or a remote address).
type limiter struct {
	limit rate.Limit
	burst int
	// idle is how long a bucket takes to fill up again: an unused bucket older than that is the same as
	// a new one and can be dropped.
	idle time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	idle := time.Duration(float64(burst) / perSecond * float64(time.Second))
	return &limiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		idle:    max(idle, time.Minute),
		buckets: map[string]*bucket{},
	}
}

// wait takes one request from key's bucket. It returns 0 when the request may go ahead, or how long
// the client should wait before the next one.
func (l *limiter) wait(key string) time.Duration {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.lastSweep) > l.idle || len(l.buckets) >= maxLimiterKeys {
		l.sweep(now)
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	l.mu.Unlock()

	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if now.Sub(b.seen) > l.idle {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxLimiterKeys {
		clear(l.buckets)
	}
}
