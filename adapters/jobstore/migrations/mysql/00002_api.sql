-- +goose Up
-- MySQL commits each DDL statement on its own, so this migration is written to be re-run after a failure
-- halfway: the new table first (IF NOT EXISTS), then one ALTER TABLE that adds the column and the index
-- together.
--
-- API tokens: only a token's digest is stored. utf8mb4_bin compares digests and ids byte by byte.
CREATE TABLE IF NOT EXISTS api_tokens (
    id         VARCHAR(191) NOT NULL,
    tenant     VARCHAR(191) NOT NULL,
    name       TEXT         NOT NULL,
    hash       VARCHAR(191) NOT NULL,
    created_at BIGINT       NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY api_tokens_hash (hash)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- deadline is unix microseconds (0 = none), like the other times of the schema; the index serves a
-- tenant's jobs by creation time (the listing's time range).
ALTER TABLE jobs
    ADD COLUMN deadline BIGINT NOT NULL DEFAULT 0,
    ADD KEY jobs_tenant_created (tenant, created_at, id);

-- +goose Down
ALTER TABLE jobs
    DROP KEY jobs_tenant_created,
    DROP COLUMN deadline;
DROP TABLE api_tokens;
