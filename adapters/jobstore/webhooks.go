package jobstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jobmill/jobmill/app/notify"
)

// Webhooks keeps webhooks and their deliveries (notify.Store) in the job store's database, on SQLite,
// PostgreSQL and MySQL. Deliveries are recorded in the notifier's log transaction, so that its consumed
// offset commits with them.
//
// Deliverers in any number of processes claim deliveries: on PostgreSQL and MySQL with SELECT … FOR
// UPDATE SKIP LOCKED, on SQLite under its single writer. A claim is a lease: the delivery is not due again
// until it expires, and the claim's lease token fences the outcome, so a deliverer that lost its lease
// records nothing.
//
// ResetDeliveries (the notifier's Reset, before a rebuild) deletes the deliveries and keeps the webhooks:
// registrations are not built from the log and could not be rebuilt.
type Webhooks struct {
	db ProjectionDB
}

var _ notify.Store = (*Webhooks)(nil)

// NewWebhooks returns the store on db (the *SQLite or *SQL job store, which migrated the tables).
func NewWebhooks(db ProjectionDB) (*Webhooks, error) {
	if db == nil {
		return nil, errors.New("webhook store: database is required")
	}
	return &Webhooks{db: db}, nil
}

const (
	webhookColumns  = `id, tenant, url, event_types, created_at`
	deliveryColumns = `id, webhook_id, tenant, job_id, type, step, event_at, data, state, attempts, last_error, ` +
		`last_status, next_attempt_at, created_at, updated_at, delivered_at`
	// claimBatchMax bounds one claim, whatever the caller asks.
	claimBatchMax = 100
)

func scanWebhook(row scanner) (notify.Webhook, error) {
	var w notify.Webhook
	var types string
	var created int64
	if err := row.Scan(&w.ID, &w.Tenant, &w.URL, &types, &created); err != nil {
		return notify.Webhook{}, err
	}
	if types != "" {
		for _, t := range strings.Split(types, ",") {
			w.EventTypes = append(w.EventTypes, notify.Type(t))
		}
	}
	w.CreatedAt = fromMicros(created)
	return w, nil
}

func joinTypes(ts []notify.Type) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ",")
}

// deliveryDest returns scan destinations for deliveryColumns and a function that finishes d after Scan.
func deliveryDest(d *notify.Delivery) ([]any, func()) {
	var typ, state, data string
	var eventAt, next, created, updated, delivered int64
	dest := []any{&d.ID, &d.WebhookID, &d.Tenant, &d.JobID, &typ, &d.Step, &eventAt, &data, &state, &d.Attempts,
		&d.LastError, &d.LastStatusCode, &next, &created, &updated, &delivered}
	return dest, func() {
		d.Type, d.State, d.Data = notify.Type(typ), notify.DeliveryState(state), []byte(data)
		d.At, d.NextAttemptAt = fromMicros(eventAt), fromMicros(next)
		d.CreatedAt, d.UpdatedAt, d.DeliveredAt = fromMicros(created), fromMicros(updated), fromMicros(delivered)
	}
}

func scanDelivery(row scanner) (notify.Delivery, error) {
	var d notify.Delivery
	dest, finish := deliveryDest(&d)
	if err := row.Scan(dest...); err != nil {
		return notify.Delivery{}, err
	}
	finish()
	return d, nil
}

func webhookNotFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return notify.ErrNotFound
	}
	return err
}

// SaveWebhook implements notify.Store.
func (s *Webhooks) SaveWebhook(ctx context.Context, w notify.Webhook, secret notify.Secret) error {
	if w.ID == "" || w.Tenant == "" || w.URL == "" || secret == "" {
		return errors.New("save webhook: a webhook needs an id, a tenant, a url and a secret")
	}
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.db.Rebind(`INSERT INTO webhooks (id, tenant, url, secret, event_types, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`), w.ID, w.Tenant, w.URL, string(secret), joinTypes(w.EventTypes), micros(w.CreatedAt))
		return err
	})
}

// Webhook implements notify.Store.
func (s *Webhooks) Webhook(ctx context.Context, tenant, id string) (notify.Webhook, error) {
	w, err := scanWebhook(s.db.ReadDB().QueryRowContext(ctx,
		s.db.Rebind(`SELECT `+webhookColumns+` FROM webhooks WHERE id = ? AND tenant = ?`), id, tenant))
	return w, webhookNotFound(err)
}

// ListWebhooks implements notify.Store.
func (s *Webhooks) ListWebhooks(ctx context.Context, tenant string) ([]notify.Webhook, error) {
	return s.webhooks(ctx, s.db.ReadDB(), tenant)
}

type webhookQuerier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *Webhooks) webhooks(ctx context.Context, q webhookQuerier, tenant string) ([]notify.Webhook, error) {
	rows, err := q.QueryContext(ctx, s.db.Rebind(`SELECT `+webhookColumns+` FROM webhooks WHERE tenant = ?
		ORDER BY created_at, id`), tenant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ws []notify.Webhook
	for rows.Next() {
		w, err := scanWebhook(rows)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, rows.Err()
}

// DeleteWebhook implements notify.Store.
func (s *Webhooks) DeleteWebhook(ctx context.Context, tenant, id string) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM webhooks WHERE id = ? AND tenant = ?`), id, tenant)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return notify.ErrNotFound
		}
		_, err = tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM webhook_deliveries WHERE webhook_id = ?`), id)
		return err
	})
}

// RecordDeliveries implements notify.Store.
func (s *Webhooks) RecordDeliveries(ctx context.Context, tenant string, ns []notify.Notification, now time.Time) (int, error) {
	insert := `INSERT INTO webhook_deliveries (id, webhook_id, tenant, job_id, type, step, event_at, data, state,
		attempts, last_error, last_status, next_attempt_at, lease, created_at, updated_at, delivered_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'PENDING', 0, '', 0, ?, '', ?, ?, 0)`
	if s.db.DialectName() == string(DialectMySQL) {
		insert += ` ON DUPLICATE KEY UPDATE id = id`
	} else {
		insert += ` ON CONFLICT (id) DO NOTHING`
	}
	insert = s.db.Rebind(insert)
	recorded := 0
	err := s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// Read in the transaction: a webhook deleted meanwhile gets no deliveries left behind.
		ws, err := s.webhooks(ctx, tx, tenant)
		if err != nil {
			return err
		}
		at := micros(now)
		for _, n := range ns {
			for _, w := range ws {
				if !w.Wants(n) {
					continue
				}
				data := string(n.Data)
				if data == "" {
					data = "{}"
				}
				res, err := tx.ExecContext(ctx, insert, notify.DeliveryID(w.ID, n), w.ID, tenant, n.JobID, string(n.Type),
					n.Step, micros(n.At), data, at, at, at)
				if err != nil {
					return fmt.Errorf("record delivery of %s to webhook %s: %w", n.Key(), w.ID, err)
				}
				if k, err := res.RowsAffected(); err == nil {
					recorded += int(k)
				}
			}
		}
		return nil
	})
	return recorded, err
}

// ResetDeliveries implements notify.Store.
func (s *Webhooks) ResetDeliveries(ctx context.Context) error {
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries`)
		return err
	})
}

// Delivery implements notify.Store.
func (s *Webhooks) Delivery(ctx context.Context, tenant, id string) (notify.Delivery, error) {
	d, err := scanDelivery(s.db.ReadDB().QueryRowContext(ctx,
		s.db.Rebind(`SELECT `+deliveryColumns+` FROM webhook_deliveries WHERE id = ? AND tenant = ?`), id, tenant))
	return d, webhookNotFound(err)
}

// Deliveries implements notify.Store.
func (s *Webhooks) Deliveries(ctx context.Context, f notify.DeliveryFilter) ([]notify.Delivery, error) {
	q := `SELECT ` + deliveryColumns + ` FROM webhook_deliveries WHERE tenant = ?`
	args := []any{f.Tenant}
	if f.WebhookID != "" {
		q, args = q+` AND webhook_id = ?`, append(args, f.WebhookID)
	}
	if f.State != "" {
		q, args = q+` AND state = ?`, append(args, string(f.State))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = notify.DefaultDeliveryLimit
	}
	q, args = q+` ORDER BY created_at DESC, id DESC LIMIT ?`, append(args, limit)
	rows, err := s.db.ReadDB().QueryContext(ctx, s.db.Rebind(q), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ds []notify.Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// Redeliver implements notify.Store.
func (s *Webhooks) Redeliver(ctx context.Context, tenant, id string, now time.Time) (notify.Delivery, error) {
	var d notify.Delivery
	err := s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		at := micros(now)
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE webhook_deliveries
			SET state = 'PENDING', attempts = 0, next_attempt_at = ?, lease = '', updated_at = ?
			WHERE id = ? AND tenant = ? AND state IN ('DELIVERED', 'DEAD')`), at, at, id, tenant)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		d, err = scanDelivery(tx.QueryRowContext(ctx,
			s.db.Rebind(`SELECT `+deliveryColumns+` FROM webhook_deliveries WHERE id = ? AND tenant = ?`), id, tenant))
		if err != nil {
			return webhookNotFound(err)
		}
		if n == 0 {
			return notify.ErrDeliveryPending
		}
		return nil
	})
	if err != nil {
		return notify.Delivery{}, err
	}
	return d, nil
}

// ClaimDeliveries implements notify.Store.
func (s *Webhooks) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]notify.Claim, error) {
	limit = min(limit, claimBatchMax)
	if limit <= 0 {
		return nil, nil
	}
	at := micros(now)
	// Look before taking locks: on SQLite a claim takes the database's only write lock, and most polls
	// find nothing.
	var one int
	err := s.db.ReadDB().QueryRowContext(ctx, s.db.Rebind(`SELECT 1 FROM webhook_deliveries
		WHERE state = 'PENDING' AND next_attempt_at <= ? LIMIT 1`), at).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	token, err := deliveryLeaseToken()
	if err != nil {
		return nil, err
	}
	pick := `SELECT id FROM webhook_deliveries WHERE state = 'PENDING' AND next_attempt_at <= ?
		ORDER BY next_attempt_at, id LIMIT ?`
	if s.db.DialectName() != "sqlite" {
		// Deliverers of other processes skip the rows this one takes instead of waiting for them.
		pick += ` FOR UPDATE SKIP LOCKED`
	}
	var claims []notify.Claim
	err = s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		claims = nil
		rows, err := tx.QueryContext(ctx, s.db.Rebind(pick), at, limit)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		in := strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", ")
		args := append([]any{micros(now.Add(lease)), token}, ids...)
		if _, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE webhook_deliveries
			SET attempts = attempts + 1, next_attempt_at = ?, lease = ? WHERE id IN (`+in+`)`), args...); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, s.db.Rebind(`SELECT d.`+strings.ReplaceAll(deliveryColumns, ", ", ", d.")+`,
			w.url, w.secret FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
			WHERE d.id IN (`+in+`) ORDER BY d.next_attempt_at, d.id`), ids...)
		if err != nil {
			return err
		}
		for rows.Next() {
			c := notify.Claim{Lease: token}
			dest, finish := deliveryDest(&c.Delivery)
			var secret string
			if err := rows.Scan(append(dest, &c.Target.URL, &secret)...); err != nil {
				rows.Close()
				return err
			}
			finish()
			c.Target.Secret = notify.Secret(secret)
			claims = append(claims, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(claims) == len(ids) {
			return nil
		}
		// A delivery recorded while its webhook was being deleted outlived it: nothing can send it.
		orphans := make([]any, 0, len(ids)-len(claims))
		for _, id := range ids {
			if !slices.ContainsFunc(claims, func(c notify.Claim) bool { return c.Delivery.ID == id }) {
				orphans = append(orphans, id)
			}
		}
		_, err = tx.ExecContext(ctx, s.db.Rebind(`DELETE FROM webhook_deliveries WHERE id IN (`+
			strings.TrimSuffix(strings.Repeat("?, ", len(orphans)), ", ")+`)`), orphans...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	return claims, nil
}

// FinishDelivery implements notify.Store.
func (s *Webhooks) FinishDelivery(ctx context.Context, c notify.Claim, o notify.Outcome) error {
	delivered := micros(c.Delivery.DeliveredAt)
	if o.State == notify.DeliveryDelivered {
		delivered = micros(o.At)
	}
	next := int64(0)
	if o.State == notify.DeliveryPending {
		next = micros(o.NextAttemptAt)
	}
	return s.db.InTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(`UPDATE webhook_deliveries SET state = ?, attempts = ?, last_status = ?,
			last_error = ?, next_attempt_at = ?, lease = '', updated_at = ?, delivered_at = ?
			WHERE id = ? AND lease = ? AND state = 'PENDING'`),
			string(o.State), o.Attempts, o.StatusCode, o.Error, next, micros(o.At), delivered, c.Delivery.ID, c.Lease)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return notify.ErrLeaseLost
		}
		return nil
	})
}

func deliveryLeaseToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
