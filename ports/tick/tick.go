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

var running = []job.State{job.StateStep1Running, job.StateStep2Running, job.StateStep3Running}

// Once publishes one tick for every running job.
func (t *Ticker) Once(ctx context.Context) error {
	after := ""
	for {
		jobs, err := t.reader.ListJobs(ctx, job.ListFilter{States: running, AfterID: after, Limit: 500})
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return nil
		}
		now := t.now()
		ticks := make([]job.Message, len(jobs))
		for i, j := range jobs {
			ticks[i] = job.Tick{JobID: j.ID, At: now}
		}
		if err := t.events.Publish(ctx, ticks...); err != nil {
			return err
		}
		after = jobs[len(jobs)-1].ID
	}
}
