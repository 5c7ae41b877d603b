-- +goose Up
-- MySQL commits each DDL statement on its own, so this migration can be re-run after a failure halfway
-- (IF NOT EXISTS, indexes declared with their tables). utf8mb4_bin compares ids byte by byte.
--
-- Webhooks that tenants register for notifications. The secret signs every delivery, so it is stored as
-- it is (a digest could not sign); it is shown once, when the webhook is created, and never read back
-- by any listing. event_types is a comma-separated list of notification types, empty for all of them.
CREATE TABLE IF NOT EXISTS webhooks (
    id          VARCHAR(64)  NOT NULL,
    tenant      VARCHAR(191) NOT NULL,
    url         TEXT         NOT NULL,
    secret      VARCHAR(255) NOT NULL,
    event_types VARCHAR(255) NOT NULL DEFAULT '',
    created_at  BIGINT       NOT NULL,
    PRIMARY KEY (id),
    KEY webhooks_tenant (tenant, created_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per notification and webhook that wants it. The id is derived from both, so recording a
-- delivery again (a duplicated or replayed event) changes nothing. next_attempt_at is when a PENDING
-- delivery is due, or, while a deliverer holds it (lease), when that claim expires; 0 once DELIVERED
-- or DEAD. Times are unix microseconds, as in the rest of the schema. TEXT columns get no DEFAULT
-- (MySQL refuses one); the store always writes them.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              VARCHAR(64)  NOT NULL,
    webhook_id      VARCHAR(64)  NOT NULL,
    tenant          VARCHAR(191) NOT NULL,
    job_id          VARCHAR(191) NOT NULL,
    type            VARCHAR(32)  NOT NULL,
    step            INT          NOT NULL,
    event_at        BIGINT       NOT NULL,
    data            MEDIUMTEXT   NOT NULL,
    state           VARCHAR(16)  NOT NULL,
    attempts        INT          NOT NULL DEFAULT 0,
    last_error      TEXT         NOT NULL,
    last_status     INT          NOT NULL DEFAULT 0,
    next_attempt_at BIGINT       NOT NULL DEFAULT 0,
    lease           VARCHAR(64)  NOT NULL DEFAULT '',
    created_at      BIGINT       NOT NULL,
    updated_at      BIGINT       NOT NULL,
    delivered_at    BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    KEY webhook_deliveries_due (state, next_attempt_at),
    KEY webhook_deliveries_tenant (tenant, created_at, id),
    KEY webhook_deliveries_webhook (webhook_id, created_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE IF EXISTS webhook_deliveries;
DROP TABLE IF EXISTS webhooks;
