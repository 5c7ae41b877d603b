package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Sender sends one delivery to its target. It returns nil only when the receiver accepted it (HTTP 2xx);
// statusCode is the receiver's answer, or 0 when none came. It must give up when ctx ends.
type Sender interface {
	Send(ctx context.Context, t Target, d Delivery) (statusCode int, err error)
}

// DelivererConfig tunes a Deliverer; zero fields take the defaults.
type DelivererConfig struct {
	// PollInterval is how often due deliveries are looked for when there were none (default 1s).
	PollInterval time.Duration
	// Concurrency is how many deliveries are sent at once (default 8).
	Concurrency int
	// MaxAttempts is how many attempts a delivery gets before it is DEAD (default 8).
	MaxAttempts int
	// BackoffBase is the wait after the first failed attempt; it doubles with each further failure
	// (default 1s), up to BackoffMax (default 5m).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// RequestTimeout bounds one attempt (default 10s).
	RequestTimeout time.Duration
	// Lease is how long a claimed delivery is kept from other deliverers: when a deliverer disappears
	// mid-attempt, the delivery is retried after it (default RequestTimeout + 30s; at least
	// RequestTimeout + 1s).
	Lease time.Duration
}

// WithDefaults fills in the zero fields.
func (c DelivererConfig) WithDefaults() DelivererConfig {
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 5 * time.Minute
	}
	if c.BackoffMax < c.BackoffBase {
		c.BackoffMax = c.BackoffBase
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = c.RequestTimeout + 30*time.Second
	}
	if c.Lease < c.RequestTimeout+time.Second {
		c.Lease = c.RequestTimeout + time.Second
	}
	return c
}

// Backoff is the wait after the attempt-th failed attempt: BackoffBase, doubled for each attempt after
// the first, capped at BackoffMax.
func (c DelivererConfig) Backoff(attempt int) time.Duration {
	d := c.BackoffBase
	for i := 1; i < attempt; i++ {
		if d >= c.BackoffMax/2 {
			return c.BackoffMax
		}
		d *= 2
	}
	return min(d, c.BackoffMax)
}

// maxErrorLength bounds the last error kept with a delivery.
const maxErrorLength = 1024

// Deliverer sends due deliveries. Any number may run, in any number of processes: each claims what it
// sends.
type Deliverer struct {
	store  Store
	sender Sender
	cfg    DelivererConfig
	now    func() time.Time
	logger *slog.Logger
	freed  chan struct{}
}

// NewDeliverer refuses nil dependencies.
func NewDeliverer(store Store, sender Sender, cfg DelivererConfig, now func() time.Time, logger *slog.Logger) (*Deliverer, error) {
	if store == nil || sender == nil || now == nil || logger == nil {
		return nil, errors.New("notify deliverer: store, sender, clock and logger are required")
	}
	return &Deliverer{store: store, sender: sender, cfg: cfg.WithDefaults(), now: now, logger: logger,
		freed: make(chan struct{}, 1)}, nil
}

// Config is the deliverer's configuration with its defaults.
func (d *Deliverer) Config() DelivererConfig { return d.cfg }

// Run sends due deliveries until ctx ends, then waits for the attempts under way: they are cut short, and
// their deliveries are left due at once, without the attempt counted. It returns nil.
func (d *Deliverer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, d.cfg.Concurrency)
	timer := time.NewTimer(d.cfg.PollInterval)
	timer.Stop()
	wait := func(dur time.Duration) bool {
		timer.Reset(dur)
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-d.freed:
			// A slot came free: there may be more to send right away.
			timer.Stop()
			return true
		}
	}
	for ctx.Err() == nil {
		free := cap(slots) - len(slots)
		if free == 0 {
			if !wait(d.cfg.PollInterval) {
				break
			}
			continue
		}
		claims, err := d.claim(ctx, free)
		if err != nil {
			if ctx.Err() == nil {
				d.logger.ErrorContext(ctx, "notifier: claim deliveries", "err", err)
			}
			if !wait(d.cfg.PollInterval) {
				break
			}
			continue
		}
		for _, c := range claims {
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() {
					<-slots
					select {
					case d.freed <- struct{}{}:
					default:
					}
					wg.Done()
				}()
				d.attempt(ctx, c)
			}()
		}
		if len(claims) < free && !wait(d.cfg.PollInterval) {
			break
		}
	}
	return nil
}

// claim takes up to limit due deliveries. It is not cut short when ctx ends: a claim that committed but
// was not returned would leave its deliveries untouched until their leases expire. Claims returned after
// ctx ended are handed back at once by attempt.
func (d *Deliverer) claim(ctx context.Context, limit int) ([]Claim, error) {
	claimCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return d.store.ClaimDeliveries(claimCtx, d.now(), d.cfg.Lease, limit)
}

// attempt sends one claimed delivery and records the outcome.
func (d *Deliverer) attempt(ctx context.Context, c Claim) {
	dl := c.Delivery
	log := d.logger.With("delivery", dl.ID, "webhook", dl.WebhookID, "tenant", dl.Tenant, "type", string(dl.Type),
		"job", dl.JobID, "attempt", dl.Attempts)
	var o Outcome
	if dl.Attempts > d.cfg.MaxAttempts {
		// The budget was spent by attempts whose deliverer vanished before recording them.
		msg := "no outcome recorded: the deliverer of the last attempt stopped"
		if dl.LastError != "" {
			msg += "; before that: " + dl.LastError
		}
		o = Outcome{State: DeliveryDead, Attempts: dl.Attempts - 1, StatusCode: dl.LastStatusCode, Error: clip(msg), At: d.now()}
	} else {
		sendCtx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		status, err := d.send(sendCtx, c)
		timedOut := errors.Is(sendCtx.Err(), context.DeadlineExceeded)
		cancel()
		now := d.now()
		switch {
		case err == nil:
			o = Outcome{State: DeliveryDelivered, Attempts: dl.Attempts, StatusCode: status, At: now}
		case ctx.Err() != nil:
			// Shutting down: this attempt does not count, and the delivery is due again at once.
			o = Outcome{State: DeliveryPending, Attempts: dl.Attempts - 1, StatusCode: dl.LastStatusCode,
				Error: dl.LastError, NextAttemptAt: now, At: now}
		default:
			msg := err.Error()
			if timedOut {
				msg = fmt.Sprintf("no response within %s", d.cfg.RequestTimeout)
			}
			o = Outcome{State: DeliveryPending, Attempts: dl.Attempts, StatusCode: status, Error: clip(msg), At: now}
			if dl.Attempts >= d.cfg.MaxAttempts {
				o.State = DeliveryDead
			} else {
				o.NextAttemptAt = now.Add(d.cfg.Backoff(dl.Attempts))
			}
		}
	}
	// The outcome is recorded even when ctx has ended: otherwise the lease would have to expire first.
	recordCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := d.store.FinishDelivery(recordCtx, c, o)
	switch {
	case errors.Is(err, ErrLeaseLost):
		log.DebugContext(ctx, "notifier: outcome of a delivery no longer held dropped", "state", string(o.State))
	case err != nil:
		log.ErrorContext(ctx, "notifier: record delivery outcome", "err", err)
	case o.State == DeliveryDead:
		log.WarnContext(ctx, "notifier: delivery dead after its last attempt", "status", o.StatusCode, "err", o.Error)
	case o.State == DeliveryPending && o.Error != "" && o.Attempts == dl.Attempts:
		log.DebugContext(ctx, "notifier: delivery attempt failed", "status", o.StatusCode, "err", o.Error,
			"next_attempt_at", o.NextAttemptAt)
	}
}

// send calls the sender, turning a panic into a failed attempt.
func (d *Deliverer) send(ctx context.Context, c Claim) (status int, err error) {
	defer func() {
		if r := recover(); r != nil {
			status, err = 0, fmt.Errorf("sender panicked: %v", r)
		}
	}()
	return d.sender.Send(ctx, c.Target, c.Delivery)
}

// clip bounds an error message, keeping it valid UTF-8.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxErrorLength {
		return s
	}
	cut := maxErrorLength
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
