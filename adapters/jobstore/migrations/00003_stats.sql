-- +goose Up
-- Statistics (app/stats), folded from the event log by the "stats" consumer group. Times are unix
-- microseconds (0 = unset) and durations microseconds. A job's row holds its counters, step times and
-- the encoded DDSketch of its sub-job run times; its per-event and per-sub-job bookkeeping lives in
-- stats_events, stats_subjobs and stats_attempts until the job ends.
CREATE TABLE stats_jobs (
    job_id           TEXT    PRIMARY KEY,
    tenant           TEXT    NOT NULL DEFAULT '',
    type             TEXT    NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL DEFAULT 0,
    step1_done       INTEGER NOT NULL DEFAULT 0,
    step2_start      INTEGER NOT NULL DEFAULT 0,
    step2_done       INTEGER NOT NULL DEFAULT 0,
    step3_done       INTEGER NOT NULL DEFAULT 0,
    ended_at         INTEGER NOT NULL DEFAULT 0,
    outcome          TEXT    NOT NULL DEFAULT '',
    total            INTEGER NOT NULL DEFAULT 0,
    step1_attempts   INTEGER NOT NULL DEFAULT 0,
    step3_attempts   INTEGER NOT NULL DEFAULT 0,
    subjobs          INTEGER NOT NULL DEFAULT 0,
    subjob_attempts  INTEGER NOT NULL DEFAULT 0,
    succeeded        INTEGER NOT NULL DEFAULT 0,
    timed_out        INTEGER NOT NULL DEFAULT 0,
    duplicates       INTEGER NOT NULL DEFAULT 0,
    step2_closed     INTEGER NOT NULL DEFAULT 0,
    step2_succeeded  INTEGER NOT NULL DEFAULT 0,
    step2_failed     INTEGER NOT NULL DEFAULT 0,
    final_total      INTEGER NOT NULL DEFAULT 0,
    final_succeeded  INTEGER NOT NULL DEFAULT 0,
    final_failed     INTEGER NOT NULL DEFAULT 0,
    final_retries    INTEGER NOT NULL DEFAULT 0,
    final_timed_out  INTEGER NOT NULL DEFAULT 0,
    final_duplicates INTEGER NOT NULL DEFAULT 0,
    final_late       INTEGER NOT NULL DEFAULT 0,
    duration_sum     INTEGER NOT NULL DEFAULT 0,
    durations        BLOB
);
-- Aggregates select a tenant's or a type's jobs by creation time.
CREATE INDEX stats_jobs_tenant ON stats_jobs (tenant, created_at);
CREATE INDEX stats_jobs_type ON stats_jobs (type, created_at);

-- The ids of the reports applied to a running job.
CREATE TABLE stats_events (
    job_id   TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (job_id, event_id)
) WITHOUT ROWID;

-- Per sub-job of a running job: its highest attempt, and the success that counts (success_attempt 0: none).
CREATE TABLE stats_subjobs (
    job_id           TEXT    NOT NULL,
    idx              INTEGER NOT NULL,
    max_attempt      INTEGER NOT NULL DEFAULT 0,
    success_attempt  INTEGER NOT NULL DEFAULT 0,
    success_at       INTEGER NOT NULL DEFAULT 0,
    success_duration INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;

-- Per failed or timed-out attempt of a running job (idx 0 for steps 1 and 3).
CREATE TABLE stats_attempts (
    job_id     TEXT    NOT NULL,
    step       INTEGER NOT NULL,
    idx        INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    error_text TEXT    NOT NULL DEFAULT '',
    timed_out  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, step, idx, attempt)
) WITHOUT ROWID;

-- Sub-job completions per job and one-second bucket (the bucket's start).
CREATE TABLE stats_completions (
    job_id    TEXT    NOT NULL,
    bucket    INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, bucket)
) WITHOUT ROWID;

-- Failed attempts per job and normalised error text.
CREATE TABLE stats_errors (
    job_id      TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    occurrences INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, message)
) WITHOUT ROWID;

-- +goose Down
DROP TABLE stats_errors;
DROP TABLE stats_completions;
DROP TABLE stats_attempts;
DROP TABLE stats_subjobs;
DROP TABLE stats_events;
DROP TABLE stats_jobs;
