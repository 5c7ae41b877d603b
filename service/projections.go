package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jobmill/jobmill/adapters/jobstore"
	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/prommetrics"
	"github.com/jobmill/jobmill/adapters/webhook"
	"github.com/jobmill/jobmill/app/notify"
	"github.com/jobmill/jobmill/app/projection"
	"github.com/jobmill/jobmill/app/stats"
	"github.com/jobmill/jobmill/app/timeline"
	"github.com/jobmill/jobmill/config"
)

// ReadModels are the projections' read sides, for the API and the CLI.
type ReadModels struct {
	Stats    *stats.Projection
	Timeline *timeline.Projection
	Webhooks *notify.Service
}

// buildProjections builds the read models on the store's database. Every process can read them; only the
// projector role feeds them from the log.
func (s *Service) buildProjections(now func() time.Time, only []string) error {
	db, ok := s.Store.(jobstore.ProjectionDB)
	if !ok {
		return fmt.Errorf("service: the %s store keeps no read models", s.cfg.Store)
	}
	statsStore, err := jobstore.NewStatsStore(db)
	if err != nil {
		return err
	}
	if s.Read.Stats, err = stats.New(statsStore); err != nil {
		return err
	}
	timelineStore, err := jobstore.NewTimelineStore(db)
	if err != nil {
		return err
	}
	if s.Read.Timeline, err = timeline.New(timelineStore); err != nil {
		return err
	}
	hooks, err := jobstore.NewWebhooks(db)
	if err != nil {
		return err
	}
	if s.Read.Webhooks, err = notify.NewService(hooks, now); err != nil {
		return err
	}
	notifier, err := notify.NewProjection(hooks, s.Store, now, s.logger)
	if err != nil {
		return err
	}
	s.App.Projections = []projection.Projection{s.Read.Stats, s.Read.Timeline, notifier}
	for _, p := range s.App.Projections {
		if !slices.Contains(messaging.LogGroups, p.Name()) {
			return fmt.Errorf("service: projection %q has no consumer group declared in messaging.LogGroups", p.Name())
		}
	}
	if only != nil {
		var kept []projection.Projection
		for _, p := range s.App.Projections {
			if slices.Contains(only, p.Name()) {
				kept = append(kept, p)
			}
		}
		s.App.Projections = kept
	}
	if s.cfg.HasRole(config.RoleProjector) && s.cfg.Notifications != config.NotifyOff {
		var sender notify.Sender = webhook.NewSender(webhook.Config{})
		if s.cfg.Notifications == config.NotifyLog {
			if sender, err = notify.NewLogSender(s.logger, nil); err != nil {
				return err
			}
		}
		deliverer, err := notify.NewDeliverer(hooks, sender, notify.DelivererConfig{}, now, s.logger)
		if err != nil {
			return err
		}
		s.backgroundRoles = append(s.backgroundRoles, deliverer.Run)
	}
	return nil
}

// buildMetrics sets up /metrics: the router's, the engine's and every consumer's lag.
func (s *Service) buildMetrics() error {
	stats, _ := s.Store.(prommetrics.StoreStats)
	pm, err := prommetrics.New(prommetrics.Options{Store: stats, Lag: s.backend.lag, Logger: s.logger})
	if err != nil {
		return err
	}
	s.Recorder.AddSink(pm)
	pm.InstrumentRouter(s.router)
	if err := pm.RegisterTypeStats(s.typeStats, 0); err != nil {
		return err
	}
	s.metrics = pm
	return nil
}

// typeStats reads the statistics projection for every registered job type, across tenants.
func (s *Service) typeStats(ctx context.Context) ([]prommetrics.TypeStats, error) {
	var out []prommetrics.TypeStats
	for _, d := range s.App.Queries.JobTypes.Handle() {
		st, err := s.Read.Stats.Aggregate(ctx, stats.Filter{Type: d.Name})
		if err != nil {
			return nil, err
		}
		out = append(out, prommetrics.TypeStats{Type: d.Name, Succeeded: st.Succeeded, Failed: st.Failed,
			Retries: st.Retries, TimedOut: st.TimedOut, Duplicates: st.Duplicates,
			Durations: st.SubJobs.Count, P50: st.SubJobs.P50, P95: st.SubJobs.P95, P99: st.SubJobs.P99})
	}
	return out, nil
}

// ErrNotReplayable: the event log keeps no history to rebuild from.
var ErrNotReplayable = errors.New("the event log cannot be replayed")

// ResetProjection empties a projection and moves its consumer group back to the start of the log, so
// that the projector rebuilds it from the whole history. Stop the processes that run the projector role
// first: a running consumer would move the group forward again.
func (s *Service) ResetProjection(ctx context.Context, name string) error {
	var p projection.Projection
	var names []string
	for _, q := range s.App.Projections {
		names = append(names, q.Name())
		if q.Name() == name {
			p = q
		}
	}
	if p == nil {
		return fmt.Errorf("no projection named %q (known: %v)", name, names)
	}
	if s.backend.resetGroup == nil {
		return fmt.Errorf("rebuild %s: %w on %s: RabbitMQ delivers each message to a group once and keeps no history; "+
			"the store's state (jobs, sub-jobs) stays exact, and the projection is complete from the moment it was first deployed", name, ErrNotReplayable, s.cfg.Log)
	}
	if err := p.Reset(ctx); err != nil {
		return fmt.Errorf("rebuild %s: empty the projection: %w", name, err)
	}
	if err := s.backend.resetGroup(ctx, name); err != nil {
		return fmt.Errorf("rebuild %s: %w", name, err)
	}
	return nil
}

// ConsumerLag reports how many messages the consumer group has still to read on the event log.
func (s *Service) ConsumerLag(ctx context.Context, group string) (int64, error) {
	src := s.backend.lag["log"]
	if src == nil {
		return 0, errors.New("this event log reports no lag")
	}
	lags, err := src(ctx)
	if err != nil {
		return 0, err
	}
	for _, l := range lags {
		if l.Consumer == group {
			return l.Messages, nil
		}
	}
	return 0, nil
}
