-- +goose Up
-- deadline is unix microseconds (0 = none), like the other times of the schema. A column with a constant
-- default is added without rewriting the table.
ALTER TABLE jobs ADD COLUMN deadline BIGINT NOT NULL DEFAULT 0;
-- A tenant's jobs by creation time (the listing's time range).
CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at, id);

-- API tokens: only a token's digest is stored.
CREATE TABLE api_tokens (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant     TEXT COLLATE "C" NOT NULL,
    name       TEXT   NOT NULL,
    hash       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT api_tokens_hash UNIQUE (hash)
);

-- +goose Down
DROP TABLE api_tokens;
DROP INDEX jobs_tenant_created;
ALTER TABLE jobs DROP COLUMN deadline;
