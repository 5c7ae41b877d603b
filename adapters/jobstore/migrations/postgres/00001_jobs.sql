-- +goose Up
-- Times are unix microseconds (0 = unset), as in the SQLite schema. Identifiers use the "C" collation so
-- that paging by id follows byte order whatever the database's locale.
CREATE TABLE jobs (
    id              TEXT COLLATE "C" PRIMARY KEY,
    tenant          TEXT COLLATE "C" NOT NULL,
    type            TEXT COLLATE "C" NOT NULL,
    input           BYTEA,
    state           TEXT    NOT NULL,
    policy          TEXT    NOT NULL,
    seq             BIGINT  NOT NULL DEFAULT 0,
    total           BIGINT  NOT NULL DEFAULT 0,
    next_index      BIGINT  NOT NULL DEFAULT 0,
    in_flight       BIGINT  NOT NULL DEFAULT 0,
    succeeded       BIGINT  NOT NULL DEFAULT 0,
    failed          BIGINT  NOT NULL DEFAULT 0,
    retries         BIGINT  NOT NULL DEFAULT 0,
    timed_out       BIGINT  NOT NULL DEFAULT 0,
    duplicates      BIGINT  NOT NULL DEFAULT 0,
    late            BIGINT  NOT NULL DEFAULT 0,
    step_attempt    INTEGER NOT NULL DEFAULT 0,
    step_deadline   BIGINT  NOT NULL DEFAULT 0,
    output          BYTEA,
    error           TEXT    NOT NULL DEFAULT '',
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    s1_started_at   BIGINT  NOT NULL DEFAULT 0,
    s1_finished_at  BIGINT  NOT NULL DEFAULT 0,
    s2_started_at   BIGINT  NOT NULL DEFAULT 0,
    s2_finished_at  BIGINT  NOT NULL DEFAULT 0,
    s3_started_at   BIGINT  NOT NULL DEFAULT 0,
    s3_finished_at  BIGINT  NOT NULL DEFAULT 0,
    ended_at        BIGINT  NOT NULL DEFAULT 0,
    idempotency_key TEXT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_tenant ON jobs (tenant, id);

-- due_at is the running attempt's deadline (RUNNING) or when the next attempt may start (RETRY_WAIT):
-- one index serves the tick's search for both.
CREATE TABLE subjobs (
    job_id      TEXT COLLATE "C" NOT NULL,
    idx         BIGINT  NOT NULL,
    state       TEXT    NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    input       BYTEA,
    result      BYTEA,
    last_error  TEXT    NOT NULL DEFAULT '',
    due_at      BIGINT  NOT NULL DEFAULT 0,
    started_at  BIGINT  NOT NULL DEFAULT 0,
    finished_at BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX subjobs_due ON subjobs (job_id, state, due_at);

-- +goose Down
DROP TABLE subjobs;
DROP TABLE jobs;
