package notify

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jobmill/jobmill/app/job"
)

var (
	// ErrNotFound: no webhook or delivery with that id for the tenant. It is job.ErrNotFound, so that
	// callers map every "not found" alike.
	ErrNotFound = job.ErrNotFound
	// ErrInvalid: a webhook registration that cannot be accepted; the wrapping error says why.
	ErrInvalid = errors.New("invalid webhook")
	// ErrDeliveryPending: a delivery that is still being attempted cannot be redelivered.
	ErrDeliveryPending = errors.New("delivery is still pending")
	// ErrLeaseLost: the delivery is no longer held by the claim (its webhook was deleted, or the lease
	// expired and another deliverer took it); the outcome was not recorded.
	ErrLeaseLost = errors.New("delivery lease lost")
)

// Webhook is a tenant's registration to receive notifications.
type Webhook struct {
	ID     string
	Tenant string
	URL    string
	// EventTypes filters the notifications sent; empty means every type.
	EventTypes []Type
	CreatedAt  time.Time
}

// Wants says whether the webhook receives n: a type it asked for, of something that happened since it was
// registered (rebuilding the notifier replays the whole log; that must not send a new webhook the
// history from before it existed).
func (w Webhook) Wants(n Notification) bool {
	if n.At.UnixMicro() < w.CreatedAt.UnixMicro() {
		return false
	}
	if len(w.EventTypes) == 0 {
		return true
	}
	for _, t := range w.EventTypes {
		if t == n.Type {
			return true
		}
	}
	return false
}

// Secret is a webhook's signing key. It hides itself from fmt, slog and JSON, so that it cannot reach a log
// by accident; string(secret) is the key.
type Secret string

func (Secret) String() string               { return "[secret]" }
func (Secret) GoString() string             { return "[secret]" }
func (Secret) LogValue() slog.Value         { return slog.StringValue("[secret]") }
func (Secret) MarshalText() ([]byte, error) { return []byte("[secret]"), nil }

// DeliveryState is where a delivery stands.
type DeliveryState string

const (
	// DeliveryPending: not yet delivered; attempted when NextAttemptAt comes.
	DeliveryPending DeliveryState = "PENDING"
	// DeliveryDelivered: the receiver answered 2xx.
	DeliveryDelivered DeliveryState = "DELIVERED"
	// DeliveryDead: every attempt failed; LastError says how the last one did. Redeliver tries again.
	DeliveryDead DeliveryState = "DEAD"
)

// Known says whether s is a delivery state.
func (s DeliveryState) Known() bool {
	return s == DeliveryPending || s == DeliveryDelivered || s == DeliveryDead
}

// Delivery is one notification for one webhook.
type Delivery struct {
	ID        string
	WebhookID string
	Notification
	State DeliveryState
	// Attempts counts the attempts made since the delivery was recorded or last redelivered.
	Attempts int
	// LastError says why the last attempt failed (empty after a success). LastStatusCode is the
	// receiver's answer to the last attempt, 0 when none came.
	LastError      string
	LastStatusCode int
	// NextAttemptAt is when a pending delivery is attempted next (while an attempt runs: when it is
	// retried if its deliverer disappears). Zero once delivered or dead.
	NextAttemptAt time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
	DeliveredAt   time.Time
}

// Target is where and how a claimed delivery is sent.
type Target struct {
	URL    string
	Secret Secret
}

// Claim is a delivery that one deliverer holds until its lease expires.
type Claim struct {
	// Delivery.Attempts already counts the attempt the claim is for.
	Delivery Delivery
	Target   Target
	// Lease fences the outcome: it is recorded only while the claim still holds the delivery.
	Lease string
}

// Outcome is what an attempt ends in; the store records it as given.
type Outcome struct {
	State         DeliveryState
	Attempts      int
	StatusCode    int
	Error         string
	NextAttemptAt time.Time // pending only
	At            time.Time
}

// DeliveryFilter selects a tenant's deliveries, newest first.
type DeliveryFilter struct {
	Tenant string
	// WebhookID narrows to one webhook; empty means all of the tenant's.
	WebhookID string
	// State narrows to one state; empty means any.
	State DeliveryState
	Limit int
}

// Store keeps webhooks and deliveries. Every method that takes a tenant treats another tenant's
// webhooks and deliveries as ErrNotFound.
type Store interface {
	// SaveWebhook stores a new webhook with its secret.
	SaveWebhook(ctx context.Context, w Webhook, secret Secret) error
	Webhook(ctx context.Context, tenant, id string) (Webhook, error)
	// ListWebhooks returns a tenant's webhooks, oldest first.
	ListWebhooks(ctx context.Context, tenant string) ([]Webhook, error)
	// DeleteWebhook deletes a webhook and its deliveries.
	DeleteWebhook(ctx context.Context, tenant, id string) error

	// RecordDeliveries records, in the transaction of the log consumer that ctx carries (or one of its
	// own), a PENDING delivery due at now for each notification and each of the tenant's webhooks that
	// Wants it, with the id DeliveryID gives. A delivery already recorded is left as it is. It returns
	// how many it recorded.
	RecordDeliveries(ctx context.Context, tenant string, ns []Notification, now time.Time) (int, error)
	// ResetDeliveries deletes every delivery (not the webhooks).
	ResetDeliveries(ctx context.Context) error

	Delivery(ctx context.Context, tenant, id string) (Delivery, error)
	Deliveries(ctx context.Context, f DeliveryFilter) ([]Delivery, error)
	// Redeliver puts a DELIVERED or DEAD delivery back to PENDING, due at now, with no attempts made;
	// a PENDING one is ErrDeliveryPending.
	Redeliver(ctx context.Context, tenant, id string, now time.Time) (Delivery, error)

	// ClaimDeliveries takes up to limit PENDING deliveries due at now, safely against other deliverers in
	// any process: each taken delivery's attempts grow by one and it is not due again until now+lease.
	ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Claim, error)
	// FinishDelivery records the outcome of a claimed attempt, or returns ErrLeaseLost.
	FinishDelivery(ctx context.Context, c Claim, o Outcome) error
}
