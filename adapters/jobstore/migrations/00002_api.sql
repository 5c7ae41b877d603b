-- +goose Up
-- deadline is unix microseconds (0 = none), like the other times of the schema.
ALTER TABLE jobs ADD COLUMN deadline INTEGER NOT NULL DEFAULT 0;
-- A tenant's jobs by creation time (the listing's time range).
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at, id);

-- API tokens: only a token's digest is stored.
CREATE TABLE api_tokens (
    id         TEXT    PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE api_tokens;
DROP INDEX jobs_tenant_created;
ALTER TABLE jobs DROP COLUMN deadline;
