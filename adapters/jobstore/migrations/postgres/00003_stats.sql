-- +goose Up
-- Statistics (app/stats), folded from the event log by the "stats" consumer group. Times are unix
-- microseconds (0 = unset) and durations microseconds. Identifiers and error texts use the "C" collation,
-- so that they compare byte by byte as on SQLite. A job's row holds its counters, step times and the
-- encoded DDSketch of its sub-job run times; its per-event and per-sub-job bookkeeping lives in
-- stats_events, stats_subjobs and stats_attempts until the job ends.
CREATE TABLE stats_jobs (
    job_id           TEXT COLLATE "C" PRIMARY KEY,
    tenant           TEXT COLLATE "C" NOT NULL DEFAULT '',
    type             TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at       BIGINT  NOT NULL DEFAULT 0,
    step1_done       BIGINT  NOT NULL DEFAULT 0,
    step2_start      BIGINT  NOT NULL DEFAULT 0,
    step2_done       BIGINT  NOT NULL DEFAULT 0,
    step3_done       BIGINT  NOT NULL DEFAULT 0,
    ended_at         BIGINT  NOT NULL DEFAULT 0,
    outcome          TEXT    NOT NULL DEFAULT '',
    total            BIGINT  NOT NULL DEFAULT 0,
    step1_attempts   BIGINT  NOT NULL DEFAULT 0,
    step3_attempts   BIGINT  NOT NULL DEFAULT 0,
    subjobs          BIGINT  NOT NULL DEFAULT 0,
    subjob_attempts  BIGINT  NOT NULL DEFAULT 0,
    succeeded        BIGINT  NOT NULL DEFAULT 0,
    timed_out        BIGINT  NOT NULL DEFAULT 0,
    duplicates       BIGINT  NOT NULL DEFAULT 0,
    step2_closed     INTEGER NOT NULL DEFAULT 0,
    step2_succeeded  BIGINT  NOT NULL DEFAULT 0,
    step2_failed     BIGINT  NOT NULL DEFAULT 0,
    final_total      BIGINT  NOT NULL DEFAULT 0,
    final_succeeded  BIGINT  NOT NULL DEFAULT 0,
    final_failed     BIGINT  NOT NULL DEFAULT 0,
    final_retries    BIGINT  NOT NULL DEFAULT 0,
    final_timed_out  BIGINT  NOT NULL DEFAULT 0,
    final_duplicates BIGINT  NOT NULL DEFAULT 0,
    final_late       BIGINT  NOT NULL DEFAULT 0,
    duration_sum     BIGINT  NOT NULL DEFAULT 0,
    durations        BYTEA
);
-- Aggregates select a tenant's or a type's jobs by creation time.
CREATE INDEX stats_jobs_tenant ON stats_jobs (tenant, created_at);
CREATE INDEX stats_jobs_type ON stats_jobs (type, created_at);

-- The ids of the reports applied to a running job.
CREATE TABLE stats_events (
    job_id   TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (job_id, event_id)
);

-- Per sub-job of a running job: its highest attempt, and the success that counts (success_attempt 0: none).
CREATE TABLE stats_subjobs (
    job_id           TEXT COLLATE "C" NOT NULL,
    idx              BIGINT NOT NULL,
    max_attempt      BIGINT NOT NULL DEFAULT 0,
    success_attempt  BIGINT NOT NULL DEFAULT 0,
    success_at       BIGINT NOT NULL DEFAULT 0,
    success_duration BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
);

-- Per failed or timed-out attempt of a running job (idx 0 for steps 1 and 3).
CREATE TABLE stats_attempts (
    job_id     TEXT COLLATE "C" NOT NULL,
    step       INTEGER NOT NULL,
    idx        BIGINT  NOT NULL,
    attempt    BIGINT  NOT NULL,
    error_text TEXT COLLATE "C" NOT NULL DEFAULT '',
    timed_out  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, step, idx, attempt)
);

-- Sub-job completions per job and one-second bucket (the bucket's start).
CREATE TABLE stats_completions (
    job_id    TEXT COLLATE "C" NOT NULL,
    bucket    BIGINT NOT NULL,
    completed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, bucket)
);

-- Failed attempts per job and normalised error text.
CREATE TABLE stats_errors (
    job_id      TEXT COLLATE "C" NOT NULL,
    message     TEXT COLLATE "C" NOT NULL,
    occurrences BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, message)
);

-- +goose Down
DROP TABLE stats_errors;
DROP TABLE stats_completions;
DROP TABLE stats_attempts;
DROP TABLE stats_subjobs;
DROP TABLE stats_events;
DROP TABLE stats_jobs;
