package service

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jobmill/jobmill/app/access"
	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/live"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/graph"
	"github.com/jobmill/jobmill/graph/graphiql"
	"github.com/jobmill/jobmill/ports/httpapi"
	"github.com/jobmill/jobmill/ports/livefeed"
)

// buildAPI adds the use cases of the GraphQL API to the application: list queries, retries, tokens and
// the live hub.
func (s *Service) buildAPI(types *jobtype.Registry, now func() time.Time) error {
	var err error
	q := &s.App.Queries
	if q.ListJobs, err = query.NewListJobsHandler(s.Store); err != nil {
		return err
	}
	if q.ListSubJobs, err = query.NewListSubJobsHandler(s.Store); err != nil {
		return err
	}
	if q.JobTypes, err = query.NewJobTypesHandler(types); err != nil {
		return err
	}
	if s.App.Commands.RetryFailedSubJobs, err = command.NewRetryFailedSubJobsHandler(s.Store, now); err != nil {
		return err
	}
	tokenStore, ok := s.Store.(access.TokenStore)
	if !ok {
		return fmt.Errorf("service: the %s store keeps no API tokens", s.cfg.Store)
	}
	if s.App.Tokens, err = access.NewTokens(tokenStore, now); err != nil {
		return err
	}
	if s.App.Live, err = live.NewHub(s.Store, live.Config{}, s.logger); err != nil {
		return err
	}
	s.closers = append(s.closers, func() error { s.App.Live.Close(); return nil })
	return nil
}

// HTTPHandler serves the probes and, with the api role, the GraphQL API at /query and GraphiQL at
// /graphiql.
func (s *Service) HTTPHandler() (http.Handler, error) {
	metricsRoute := httpapi.Route{Pattern: "GET /metrics", Handler: s.metrics.Handler()}
	if !s.cfg.HasRole(config.RoleAPI) {
		return httpapi.NewHandler(s.ready, metricsRoute), nil
	}
	api, err := graph.NewHandler(graph.Config{
		App:            s.App,
		Stats:          s.Read.Stats,
		Timeline:       s.Read.Timeline,
		Webhooks:       s.Read.Webhooks,
		AuthRequired:   s.cfg.Auth != config.AuthOff,
		AllowedOrigins: s.cfg.API.AllowedOrigins,
		RateLimit:      float64(s.cfg.API.RateLimit),
		RateBurst:      2 * s.cfg.API.RateLimit,
		Logger:         s.logger,
	})
	if err != nil {
		return nil, err
	}
	return httpapi.NewHandler(s.ready, metricsRoute,
		httpapi.Route{Pattern: "/query", Handler: api},
		httpapi.Route{Pattern: "/graphiql/", Handler: http.StripPrefix("/graphiql", graphiql.Handler("/query"))},
		httpapi.Route{Pattern: "GET /graphiql", Handler: http.RedirectHandler("/graphiql/", http.StatusMovedPermanently)},
	), nil
}

// runLiveFeed feeds the live hub from this process's own subscription to the event log.
func (s *Service) runLiveFeed(ctx context.Context) error {
	if s.backend.tailSubscriber == nil {
		return errors.New("service: this event log offers no live subscription")
	}
	sub, err := s.track(s.backend.tailSubscriber())
	if err != nil {
		return fmt.Errorf("live feed: %w", err)
	}
	return livefeed.Run(ctx, sub, s.App.Live)
}
