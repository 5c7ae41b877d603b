package notify

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jobmill/jobmill/app/access"
)

const (
	// SecretPrefix starts every webhook secret, so that a leaked one is easy to recognise.
	SecretPrefix = "whsec_"
	// MaxWebhooksPerTenant bounds the fan-out of one notification.
	MaxWebhooksPerTenant = 50
	// MaxURLLength is the longest webhook URL accepted.
	MaxURLLength = 2048
	// DefaultDeliveryLimit and MaxDeliveryLimit bound a listing of deliveries.
	DefaultDeliveryLimit = 50
	MaxDeliveryLimit     = 500
)

// Service is the management of webhooks and their deliveries, for one tenant at a time.
type Service struct {
	store Store
	now   func() time.Time
}

// NewService refuses nil dependencies.
func NewService(store Store, now func() time.Time) (*Service, error) {
	if store == nil || now == nil {
		return nil, errors.New("notify: store and clock are required")
	}
	return &Service{store: store, now: now}, nil
}

// CreateWebhook registers url to receive the tenant's notifications of the given types (none: every
// type). It returns the secret that signs them: the only time it is ever shown.
func (s *Service) CreateWebhook(ctx context.Context, tenant, rawURL string, types []string) (Webhook, string, error) {
	if err := access.ValidateTenant(tenant); err != nil {
		return Webhook{}, "", err
	}
	u, err := ValidateURL(rawURL)
	if err != nil {
		return Webhook{}, "", err
	}
	ts, err := ParseTypes(types)
	if err != nil {
		return Webhook{}, "", err
	}
	existing, err := s.store.ListWebhooks(ctx, tenant)
	if err != nil {
		return Webhook{}, "", fmt.Errorf("list webhooks: %w", err)
	}
	if len(existing) >= MaxWebhooksPerTenant {
		return Webhook{}, "", fmt.Errorf("%w: a tenant has at most %d webhooks; delete one first", ErrInvalid, MaxWebhooksPerTenant)
	}
	id, err := randomHex(16)
	if err != nil {
		return Webhook{}, "", err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return Webhook{}, "", err
	}
	secret := SecretPrefix + base64.RawURLEncoding.EncodeToString(key)
	// The store keeps microseconds: the webhook returned now equals the one read later.
	w := Webhook{ID: id, Tenant: tenant, URL: u, EventTypes: ts, CreatedAt: time.UnixMicro(s.now().UnixMicro())}
	if err := s.store.SaveWebhook(ctx, w, Secret(secret)); err != nil {
		return Webhook{}, "", fmt.Errorf("save webhook: %w", err)
	}
	return w, secret, nil
}

// DeleteWebhook deletes a webhook of the tenant and its deliveries; an attempt already under way may
// still reach the receiver.
func (s *Service) DeleteWebhook(ctx context.Context, tenant, id string) error {
	if err := s.store.DeleteWebhook(ctx, tenant, id); err != nil {
		return fmt.Errorf("delete webhook %s: %w", id, err)
	}
	return nil
}

// Webhook returns one of the tenant's webhooks.
func (s *Service) Webhook(ctx context.Context, tenant, id string) (Webhook, error) {
	w, err := s.store.Webhook(ctx, tenant, id)
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook %s: %w", id, err)
	}
	return w, nil
}

// ListWebhooks returns the tenant's webhooks, oldest first.
func (s *Service) ListWebhooks(ctx context.Context, tenant string) ([]Webhook, error) {
	ws, err := s.store.ListWebhooks(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return ws, nil
}

// Deliveries lists the tenant's deliveries, newest first: of one webhook unless webhookID is empty, in one
// state unless state is empty. limit 0 means DefaultDeliveryLimit; it is at most MaxDeliveryLimit.
func (s *Service) Deliveries(ctx context.Context, tenant, webhookID string, state DeliveryState, limit int) ([]Delivery, error) {
	if state != "" && !state.Known() {
		return nil, fmt.Errorf("%w: unknown delivery state %q (want %s, %s or %s)", ErrInvalid, state,
			DeliveryPending, DeliveryDelivered, DeliveryDead)
	}
	switch {
	case limit < 0:
		return nil, fmt.Errorf("%w: limit must not be negative", ErrInvalid)
	case limit == 0:
		limit = DefaultDeliveryLimit
	case limit > MaxDeliveryLimit:
		limit = MaxDeliveryLimit
	}
	if webhookID != "" {
		if _, err := s.Webhook(ctx, tenant, webhookID); err != nil {
			return nil, err
		}
	}
	ds, err := s.store.Deliveries(ctx, DeliveryFilter{Tenant: tenant, WebhookID: webhookID, State: state, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return ds, nil
}

// Delivery returns one of the tenant's deliveries.
func (s *Service) Delivery(ctx context.Context, tenant, id string) (Delivery, error) {
	d, err := s.store.Delivery(ctx, tenant, id)
	if err != nil {
		return Delivery{}, fmt.Errorf("delivery %s: %w", id, err)
	}
	return d, nil
}

// Redeliver sends a delivered or dead delivery again, with a fresh budget of attempts. The receiver gets
// the same delivery id.
func (s *Service) Redeliver(ctx context.Context, tenant, deliveryID string) (Delivery, error) {
	d, err := s.store.Redeliver(ctx, tenant, deliveryID, s.now())
	if err != nil {
		return Delivery{}, fmt.Errorf("redeliver %s: %w", deliveryID, err)
	}
	return d, nil
}

// ValidateURL checks a webhook URL and returns it as it will be called: absolute http or https, with a
// host, without credentials or fragment.
func ValidateURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", fmt.Errorf("%w: url is required", ErrInvalid)
	}
	if len(raw) > MaxURLLength {
		return "", fmt.Errorf("%w: url is longer than %d characters", ErrInvalid, MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: url does not parse: %v", ErrInvalid, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%w: url must start with http:// or https:// (got %q)", ErrInvalid, u.Scheme+":")
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("%w: url has no host", ErrInvalid)
	case u.User != nil:
		// They would be stored, listed and sent in clear; the signature authenticates deliveries.
		return "", fmt.Errorf("%w: url must not contain a user name or password", ErrInvalid)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "", fmt.Errorf("%w: url must not contain a fragment (#...)", ErrInvalid)
	}
	return u.String(), nil
}

// ParseTypes checks a list of notification types, dropping repeats; none means every type.
func ParseTypes(names []string) ([]Type, error) {
	var ts []Type
	for _, name := range names {
		t := Type(strings.TrimSpace(name))
		if !t.Known() {
			known := make([]string, 0, len(Types()))
			for _, k := range Types() {
				known = append(known, string(k))
			}
			return nil, fmt.Errorf("%w: unknown event type %q (known: %s)", ErrInvalid, name, strings.Join(known, ", "))
		}
		if !slices.Contains(ts, t) {
			ts = append(ts, t)
		}
	}
	return ts, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
