// Package tick drives the periodic clock: every interval it puts a Tick event for each running job on the
// event log, where the manager times out attempts that never reported back and starts due retries.
package tick

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

// Publisher puts events on the log.
type Publisher interface {
	Publish(ctx context.Context, events ...job.Message) error
}

// Ticker publishes ticks.
type Ticker struct {
	reader   job.Reader
	events   Publisher
	interval time.Duration
	now      func() time.Time
	logger   *slog.Logger
}

// New returns a ticker; every dependency is required.
func New(reader job.Reader, events Publisher, interval time.Duration, now func() time.Time, logger *slog.Logger) (*Ticker, error) {
	if reader == nil || events == nil || now == nil || logger == nil {
		return nil, errors.New("tick: reader, publisher, clock and logger are required")
	}
	if interval <= 0 {
		return nil, errors.New("tick: interval must be positive")
	}
	return &Ticker{reader: reader, events: events, interval: interval, now: now, logger: logger}, nil
}

// Run ticks until ctx ends. A failed round is logged and the next one tries again.
func (t *Ticker) Run(ctx context.Context) error {
	tk := time.NewTicker(t.interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
			if err := t.Once(ctx); err != nil && ctx.Err() == nil {
				t.logger.Warn("tick round failed", "err", err)
			}
		}
	}
}

// Once publishes one tick for every running job that has an attempt past its deadline or a retry due.
// Jobs with nothing due get no tick, so ticks never crowd the log of a busy engine.
func (t *Ticker) Once(ctx context.Context) error {
	after := ""
	now := t.now()
	for {
		ids, err := t.reader.DueJobs(ctx, now, after, 500)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		ticks := make([]job.Message, len(ids))
		for i, id := range ids {
			ticks[i] = job.Tick{JobID: id, At: now}
		}
		if err := t.events.Publish(ctx, ticks...); err != nil {
			return err
		}
		after = ids[len(ids)-1]
	}
}
