-- +goose Up
CREATE TABLE jobs (
    id              TEXT    PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    input           BLOB,
    state           TEXT    NOT NULL,
    policy          TEXT    NOT NULL,
    seq             INTEGER NOT NULL DEFAULT 0,
    total           INTEGER NOT NULL DEFAULT 0,
    next_index      INTEGER NOT NULL DEFAULT 0,
    in_flight       INTEGER NOT NULL DEFAULT 0,
    succeeded       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    retries         INTEGER NOT NULL DEFAULT 0,
    timed_out       INTEGER NOT NULL DEFAULT 0,
    duplicates      INTEGER NOT NULL DEFAULT 0,
    late            INTEGER NOT NULL DEFAULT 0,
    step_attempt    INTEGER NOT NULL DEFAULT 0,
    step_deadline   INTEGER NOT NULL DEFAULT 0,
    output          BLOB,
    error           TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    s1_started_at   INTEGER NOT NULL DEFAULT 0,
    s1_finished_at  INTEGER NOT NULL DEFAULT 0,
    s2_started_at   INTEGER NOT NULL DEFAULT 0,
    s2_finished_at  INTEGER NOT NULL DEFAULT 0,
    s3_started_at   INTEGER NOT NULL DEFAULT 0,
    s3_finished_at  INTEGER NOT NULL DEFAULT 0,
    ended_at        INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_tenant ON jobs (tenant, id);

-- due_at is the running attempt's deadline (RUNNING) or when the next attempt may start (RETRY_WAIT):
-- one index serves the tick's search for both.
CREATE TABLE subjobs (
    job_id      TEXT    NOT NULL,
    idx         INTEGER NOT NULL,
    state       TEXT    NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    input       BLOB,
    result      BLOB,
    last_error  TEXT    NOT NULL DEFAULT '',
    due_at      INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER NOT NULL DEFAULT 0,
    finished_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE INDEX subjobs_due ON subjobs (job_id, state, due_at);

-- +goose Down
DROP TABLE subjobs;
DROP TABLE jobs;
