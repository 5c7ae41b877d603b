-- +goose Up
-- Times are unix microseconds (0 = unset), as in the SQLite schema. utf8mb4_bin compares identifiers
-- byte by byte, as SQLite does, so paging by id and idempotency keys are exact. TEXT columns get no
-- DEFAULT (MySQL refuses one); the store always writes them.
CREATE TABLE jobs (
    id              VARCHAR(191) NOT NULL,
    tenant          VARCHAR(191) NOT NULL,
    type            VARCHAR(191) NOT NULL,
    input           LONGBLOB,
    state           VARCHAR(32)  NOT NULL,
    policy          TEXT         NOT NULL,
    seq             BIGINT       NOT NULL DEFAULT 0,
    total           BIGINT       NOT NULL DEFAULT 0,
    next_index      BIGINT       NOT NULL DEFAULT 0,
    in_flight       BIGINT       NOT NULL DEFAULT 0,
    succeeded       BIGINT       NOT NULL DEFAULT 0,
    failed          BIGINT       NOT NULL DEFAULT 0,
    retries         BIGINT       NOT NULL DEFAULT 0,
    timed_out       BIGINT       NOT NULL DEFAULT 0,
    duplicates      BIGINT       NOT NULL DEFAULT 0,
    late            BIGINT       NOT NULL DEFAULT 0,
    step_attempt    INT          NOT NULL DEFAULT 0,
    step_deadline   BIGINT       NOT NULL DEFAULT 0,
    output          LONGBLOB,
    error           MEDIUMTEXT   NOT NULL,
    created_at      BIGINT       NOT NULL,
    updated_at      BIGINT       NOT NULL,
    s1_started_at   BIGINT       NOT NULL DEFAULT 0,
    s1_finished_at  BIGINT       NOT NULL DEFAULT 0,
    s2_started_at   BIGINT       NOT NULL DEFAULT 0,
    s2_finished_at  BIGINT       NOT NULL DEFAULT 0,
    s3_started_at   BIGINT       NOT NULL DEFAULT 0,
    s3_finished_at  BIGINT       NOT NULL DEFAULT 0,
    ended_at        BIGINT       NOT NULL DEFAULT 0,
    -- NULL when the job has no key: a unique index admits any number of NULLs.
    idempotency_key VARCHAR(255) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY jobs_idempotency (tenant, idempotency_key),
    KEY jobs_state (state, id),
    KEY jobs_tenant (tenant, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- due_at is the running attempt's deadline (RUNNING) or when the next attempt may start (RETRY_WAIT):
-- one index serves the tick's search for both.
CREATE TABLE subjobs (
    job_id      VARCHAR(191) NOT NULL,
    idx         BIGINT       NOT NULL,
    state       VARCHAR(32)  NOT NULL,
    attempt     INT          NOT NULL DEFAULT 0,
    input       LONGBLOB,
    result      LONGBLOB,
    last_error  MEDIUMTEXT   NOT NULL,
    due_at      BIGINT       NOT NULL DEFAULT 0,
    started_at  BIGINT       NOT NULL DEFAULT 0,
    finished_at BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx),
    KEY subjobs_due (job_id, state, due_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE subjobs;
DROP TABLE jobs;
