// Package service is the composition root: it wires configuration to adapters, the core and the ports.
// cmd/jobmill and programs that embed jobmill (see examples/) both start the engine through it.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/jobmill/jobmill/adapters/messaging"
	"github.com/jobmill/jobmill/adapters/metrics"
	"github.com/jobmill/jobmill/adapters/prommetrics"
	"github.com/jobmill/jobmill/app"
	"github.com/jobmill/jobmill/app/command"
	"github.com/jobmill/jobmill/app/job"
	"github.com/jobmill/jobmill/app/jobtype"
	"github.com/jobmill/jobmill/app/manager"
	"github.com/jobmill/jobmill/app/query"
	"github.com/jobmill/jobmill/app/worker"
	"github.com/jobmill/jobmill/config"
	"github.com/jobmill/jobmill/ports/router"
	"github.com/jobmill/jobmill/ports/tick"
)

// Service is one jobmill process: the application and the roles that drive it.
type Service struct {
	App      app.Application
	Recorder *metrics.Recorder
	// Store is the job store the configuration selected.
	Store job.Store

	cfg      config.Config
	backend  *backend
	router   *message.Router
	ticker   *tick.Ticker
	logger   *slog.Logger
	wmLogger watermill.LoggerAdapter
	closers  []func() error
	once     sync.Once

	subsMu      sync.Mutex
	subscribers []message.Subscriber

	// Read are the projections' read sides.
	Read ReadModels
	// backgroundRoles run beside the router for the life of Run (the webhook deliverer).
	backgroundRoles []func(ctx context.Context) error
	metrics         *prommetrics.Metrics
}

func decorate(opts Options, kind, group string) func(message.Subscriber, error) (message.Subscriber, error) {
	return func(sub message.Subscriber, err error) (message.Subscriber, error) {
		if err != nil || opts.DecorateSubscriber == nil {
			return sub, err
		}
		return opts.DecorateSubscriber(kind, group, sub), nil
	}
}

// track remembers a subscriber so that Run closes it before the database closes: the router closes
// subscribers asynchronously, and a queue subscriber still flushing acks needs the database open.
func (s *Service) track(sub message.Subscriber, err error) (message.Subscriber, error) {
	if err == nil {
		s.subsMu.Lock()
		s.subscribers = append(s.subscribers, sub)
		s.subsMu.Unlock()
	}
	return sub, err
}

func (s *Service) closeSubscribers() {
	s.subsMu.Lock()
	subs := s.subscribers
	s.subsMu.Unlock()
	for _, sub := range subs {
		if err := sub.Close(); err != nil {
			s.logger.Warn("closing a subscriber failed", "err", err)
		}
	}
}

// Options are what New needs besides the configuration.
type Options struct {
	Types  *jobtype.Registry
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// DecorateSubscriber, when set, wraps every subscriber the router consumes from. kind is "log" (group
	// names the consumer group) or "queue". Tests use it to deliver every message twice, as an
	// at-least-once transport may, or to stall one consumer group.
	DecorateSubscriber func(kind, group string, sub message.Subscriber) message.Subscriber
	// Projections, when set, names the only projections the projector role feeds (a rebuild runs one).
	Projections []string
}

// ErrUnsupportedBackend: the configuration names a backend this build cannot run yet.
var ErrUnsupportedBackend = errors.New("backend not supported")

// New opens the store and transports the configuration names and builds the application and its roles.
func New(ctx context.Context, cfg config.Config, opts Options) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Types == nil {
		return nil, errors.New("service: no job types registered")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Service{cfg: cfg, logger: opts.Logger, Recorder: metrics.NewRecorder(), wmLogger: watermillLogger(opts.Logger)}
	if err := s.open(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.build(opts); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Service) open(ctx context.Context) error {
	b, err := openBackend(ctx, s.cfg, s.wmLogger)
	if err != nil {
		return err
	}
	s.backend = b
	s.closers = append(s.closers, b.close)
	s.Store = b.store
	return nil
}

func (s *Service) build(opts Options) error {
	logPub := s.backend.logPublisher
	// Workers and the ticker report through a group-committing publisher: one transaction for all the
	// reports that finish while the previous transaction commits.
	batched := messaging.NewBatchingPublisher(logPub, 500)
	s.closers = append(s.closers, batched.Close)
	events := messaging.EventPublisher{Publisher: batched}
	newID := func() string { return watermill.NewULID() }

	submit, err := command.NewSubmitJobHandler(s.Store, opts.Types, newID, opts.Now)
	if err != nil {
		return err
	}
	cancel, err := command.NewCancelJobHandler(s.Store, opts.Now)
	if err != nil {
		return err
	}
	status, err := query.NewJobStatusHandler(s.Store)
	if err != nil {
		return err
	}
	mgr, err := manager.New(s.Store, manager.Config{Window: s.cfg.DispatchWindow}, opts.Now, s.Recorder, s.logger)
	if err != nil {
		return err
	}
	wrk, err := worker.New(opts.Types, s.Store, events, opts.Now, s.logger)
	if err != nil {
		return err
	}
	s.App = app.Application{
		Commands: app.Commands{SubmitJob: submit, CancelJob: cancel},
		Queries:  app.Queries{JobStatus: status},
		Manager:  mgr,
		Worker:   wrk,
	}
	if err := s.buildAPI(opts.Types, opts.Now); err != nil {
		return err
	}
	if err := s.buildProjections(opts.Now, opts.Projections); err != nil {
		return err
	}

	transport := router.Transport{
		LogSubscriber: func(group string) (message.Subscriber, error) {
			return s.track(decorate(opts, "log", group)(s.backend.logSubscriber(group)))
		},
		QueueSubscriber: func(concurrency int) (message.Subscriber, error) {
			return s.track(decorate(opts, "queue", "")(s.backend.queueSubscriber(concurrency)))
		},
		PoisonPublisher: s.backend.poisonPublisher,
	}
	s.router, err = router.New(s.App, transport, router.Config{
		Manager:     s.cfg.HasRole(config.RoleManager),
		Worker:      s.cfg.HasRole(config.RoleWorker),
		Projector:   s.cfg.HasRole(config.RoleProjector),
		Workers:     s.cfg.Workers,
		StepWorkers: 4,
	}, s.wmLogger)
	if err != nil {
		return err
	}
	if err := s.buildMetrics(); err != nil {
		return err
	}
	if s.cfg.HasRole(config.RoleTicker) {
		s.ticker, err = tick.New(s.Store, events, s.cfg.Tick, time.Now, s.logger)
		if err != nil {
			return err
		}
	}
	return nil
}

// Run runs every configured role and the HTTP listener until ctx ends, then stops them gracefully.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4+len(s.backend.background)+len(s.backgroundRoles))

	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	handler, err := s.HTTPHandler()
	if err != nil {
		_ = ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("http: %w", err)
		}
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.router.Run(ctx); err != nil {
			errs <- fmt.Errorf("router: %w", err)
		}
	}()
	if s.cfg.HasRole(config.RoleAPI) {
		if s.cfg.Auth == config.AuthOff {
			s.logger.Warn("API AUTHENTICATION IS OFF: anyone who can reach " + ln.Addr().String() +
				" sees and controls every tenant's jobs; set auth: required for anything but local development")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.runLiveFeed(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		}()
	}
	for _, bg := range append(append([]func(context.Context) error{}, s.backend.background...), s.backgroundRoles...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bg(ctx); err != nil && ctx.Err() == nil {
				errs <- err
			}
		}()
	}
	if s.ticker != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-s.router.Running()
			_ = s.ticker.Run(ctx)
		}()
	}
	s.logger.Info("jobmill running", "listen", ln.Addr().String(), "roles", s.cfg.Roles, "workers", s.cfg.Workers,
		"log", s.cfg.Log, "queue", s.cfg.Queue, "store", s.cfg.Store)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
		cancel()
	}
	shutdownCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	// Shutdown does not close websockets: the cancelled BaseContext and the closed hub end subscriptions.
	s.App.Live.Close()
	_ = srv.Shutdown(shutdownCtx)
	_ = s.router.Close()
	wg.Wait()
	s.closeSubscribers()
	return runErr
}

// Running is closed once the router runs its handlers.
func (s *Service) Running() chan struct{} { return s.router.Running() }

func (s *Service) ready() error {
	if !s.router.IsRunning() {
		return errors.New("message router is not running")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.backend.ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, check := range s.backend.readyChecks {
		if err := check(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the database. Call it after Run returned.
func (s *Service) Close() error {
	var err error
	s.once.Do(func() {
		for i := len(s.closers) - 1; i >= 0; i-- {
			err = errors.Join(err, s.closers[i]())
		}
	})
	return err
}

// RawThroughput measures the transport's own publish+consume rate with n messages: the event log's, or
// the slower of log and queue when they differ.
func (s *Service) RawThroughput(ctx context.Context, n int) (float64, error) {
	return s.backend.rawThroughput(ctx, n)
}

// TransportName names the configured backends for reports.
func (s *Service) TransportName() string {
	if s.cfg.Log == s.cfg.Queue {
		return s.cfg.Log
	}
	return s.cfg.Log + "+" + s.cfg.Queue
}

// watermillLogger keeps Watermill's per-handler chatter out of info logs.
func watermillLogger(l *slog.Logger) watermill.LoggerAdapter {
	ctx := context.Background()
	return gatedLogger{
		LoggerAdapter: watermill.NewSlogLoggerWithLevelMapping(l, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}),
		debug:         l.Enabled(ctx, slog.LevelDebug),
		trace:         l.Enabled(ctx, watermill.LevelTrace),
	}
}

// gatedLogger drops Watermill's info (logged at debug), debug and trace calls before their fields are
// converted: the router and subscribers log several per message, and converting fields that the level
// then discards cost about 8% of a busy engine's CPU.
type gatedLogger struct {
	watermill.LoggerAdapter
	debug, trace bool
}

func (g gatedLogger) Info(msg string, fields watermill.LogFields) {
	if g.debug {
		g.LoggerAdapter.Info(msg, fields)
	}
}

func (g gatedLogger) Debug(msg string, fields watermill.LogFields) {
	if g.debug {
		g.LoggerAdapter.Debug(msg, fields)
	}
}

func (g gatedLogger) Trace(msg string, fields watermill.LogFields) {
	if g.trace {
		g.LoggerAdapter.Trace(msg, fields)
	}
}

func (g gatedLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return gatedLogger{LoggerAdapter: g.LoggerAdapter.With(fields), debug: g.debug, trace: g.trace}
}
