-- +goose Up
-- Webhooks that tenants register for notifications. The secret signs every delivery, so it is stored as
-- it is (a digest could not sign); it is shown once, when the webhook is created, and never read back
-- by any listing. event_types is a comma-separated list of notification types, empty for all of them.
CREATE TABLE webhooks (
    id          TEXT    PRIMARY KEY,
    tenant      TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    event_types TEXT    NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL
);
CREATE INDEX webhooks_tenant ON webhooks (tenant, created_at, id);

-- One row per notification and webhook that wants it. The id is derived from both, so recording a
-- delivery again (a duplicated or replayed event) changes nothing. next_attempt_at is when a PENDING
-- delivery is due, or, while a deliverer holds it (lease), when that claim expires; 0 once DELIVERED
-- or DEAD. Times are unix microseconds, as in the rest of the schema.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    webhook_id      TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    job_id          TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    step            INTEGER NOT NULL,
    event_at        INTEGER NOT NULL,
    data            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    last_status     INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    lease           TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER NOT NULL DEFAULT 0
);
-- Only pending deliveries are ever claimed; delivered ones pile up outside the index.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'PENDING';
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant, created_at, id);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, created_at, id);

-- +goose Down
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
