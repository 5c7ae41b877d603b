package notify_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jobmill/jobmill/app/notify"
)

// memStore is notify.Store in memory, with the semantics the SQL store has, and a record of the outcomes
// it was given.
type memStore struct {
	mu           sync.Mutex
	webhooks     map[string]notify.Webhook
	secrets      map[string]notify.Secret
	deliveries   map[string]*memDelivery
	outcomes     []notify.Outcome
	leases       int
	recordErr    error
	recordN      int // calls of RecordDeliveries
	claimErr     error
	failedClaims int
}

type memDelivery struct {
	d     notify.Delivery
	lease string
}

func newMemStore() *memStore {
	return &memStore{webhooks: map[string]notify.Webhook{}, secrets: map[string]notify.Secret{},
		deliveries: map[string]*memDelivery{}}
}

func (m *memStore) SaveWebhook(_ context.Context, w notify.Webhook, secret notify.Secret) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.webhooks[w.ID]; ok {
		return fmt.Errorf("webhook %s exists", w.ID)
	}
	m.webhooks[w.ID], m.secrets[w.ID] = w, secret
	return nil
}

func (m *memStore) Webhook(_ context.Context, tenant, id string) (notify.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.webhooks[id]
	if !ok || w.Tenant != tenant {
		return notify.Webhook{}, notify.ErrNotFound
	}
	return w, nil
}

func (m *memStore) ListWebhooks(_ context.Context, tenant string) ([]notify.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.webhooksOf(tenant), nil
}

func (m *memStore) webhooksOf(tenant string) []notify.Webhook {
	var ws []notify.Webhook
	for _, w := range m.webhooks {
		if w.Tenant == tenant {
			ws = append(ws, w)
		}
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].ID < ws[j].ID })
	return ws
}

func (m *memStore) DeleteWebhook(_ context.Context, tenant, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.webhooks[id]
	if !ok || w.Tenant != tenant {
		return notify.ErrNotFound
	}
	delete(m.webhooks, id)
	for k, d := range m.deliveries {
		if d.d.WebhookID == id {
			delete(m.deliveries, k)
		}
	}
	return nil
}

func (m *memStore) RecordDeliveries(_ context.Context, tenant string, ns []notify.Notification, now time.Time) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recordN++
	if m.recordErr != nil {
		return 0, m.recordErr
	}
	n := 0
	for _, no := range ns {
		for _, w := range m.webhooksOf(tenant) {
			id := notify.DeliveryID(w.ID, no)
			if !w.Wants(no) || m.deliveries[id] != nil {
				continue
			}
			m.deliveries[id] = &memDelivery{d: notify.Delivery{ID: id, WebhookID: w.ID, Notification: no,
				State: notify.DeliveryPending, NextAttemptAt: now, CreatedAt: now, UpdatedAt: now}}
			n++
		}
	}
	return n, nil
}

func (m *memStore) ResetDeliveries(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.deliveries)
	return nil
}

func (m *memStore) Delivery(_ context.Context, tenant, id string) (notify.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deliveries[id]
	if !ok || d.d.Tenant != tenant {
		return notify.Delivery{}, notify.ErrNotFound
	}
	return d.d, nil
}

func (m *memStore) Deliveries(_ context.Context, f notify.DeliveryFilter) ([]notify.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ds []notify.Delivery
	for _, d := range m.deliveries {
		if d.d.Tenant == f.Tenant && (f.WebhookID == "" || d.d.WebhookID == f.WebhookID) && (f.State == "" || d.d.State == f.State) {
			ds = append(ds, d.d)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].ID < ds[j].ID })
	if len(ds) > f.Limit {
		ds = ds[:f.Limit]
	}
	return ds, nil
}

func (m *memStore) Redeliver(_ context.Context, tenant, id string, now time.Time) (notify.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deliveries[id]
	if !ok || d.d.Tenant != tenant {
		return notify.Delivery{}, notify.ErrNotFound
	}
	if d.d.State == notify.DeliveryPending {
		return notify.Delivery{}, notify.ErrDeliveryPending
	}
	d.d.State, d.d.Attempts, d.d.NextAttemptAt, d.d.UpdatedAt, d.lease = notify.DeliveryPending, 0, now, now, ""
	return d.d, nil
}

func (m *memStore) ClaimDeliveries(_ context.Context, now time.Time, lease time.Duration, limit int) ([]notify.Claim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.claimErr != nil {
		m.failedClaims++
		return nil, m.claimErr
	}
	var due []*memDelivery
	for _, d := range m.deliveries {
		if d.d.State == notify.DeliveryPending && !d.d.NextAttemptAt.After(now) {
			due = append(due, d)
		}
	}
	slices.SortFunc(due, func(a, b *memDelivery) int { return a.d.NextAttemptAt.Compare(b.d.NextAttemptAt) })
	var claims []notify.Claim
	for _, d := range due[:min(limit, len(due))] {
		m.leases++
		d.lease = fmt.Sprintf("lease-%d", m.leases)
		d.d.Attempts++
		d.d.NextAttemptAt = now.Add(lease)
		w := m.webhooks[d.d.WebhookID]
		claims = append(claims, notify.Claim{Delivery: d.d, Target: notify.Target{URL: w.URL, Secret: m.secrets[w.ID]}, Lease: d.lease})
	}
	return claims, nil
}

func (m *memStore) FinishDelivery(_ context.Context, c notify.Claim, o notify.Outcome) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deliveries[c.Delivery.ID]
	if !ok || d.lease != c.Lease || d.d.State != notify.DeliveryPending {
		return notify.ErrLeaseLost
	}
	m.outcomes = append(m.outcomes, o)
	d.lease = ""
	d.d.State, d.d.Attempts, d.d.LastStatusCode, d.d.LastError, d.d.UpdatedAt = o.State, o.Attempts, o.StatusCode, o.Error, o.At
	d.d.NextAttemptAt = time.Time{}
	if o.State == notify.DeliveryPending {
		d.d.NextAttemptAt = o.NextAttemptAt
	}
	if o.State == notify.DeliveryDelivered {
		d.d.DeliveredAt = o.At
	}
	return nil
}

// snapshot returns the deliveries and the outcomes recorded so far.
func (m *memStore) snapshot() ([]notify.Delivery, []notify.Outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ds []notify.Delivery
	for _, d := range m.deliveries {
		ds = append(ds, d.d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].WebhookID+" "+ds[i].Key() < ds[j].WebhookID+" "+ds[j].Key() })
	return ds, slices.Clone(m.outcomes)
}
