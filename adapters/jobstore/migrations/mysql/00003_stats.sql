-- +goose Up
-- Statistics (app/stats), folded from the event log by the "stats" consumer group. Times are unix
-- microseconds (0 = unset) and durations microseconds. utf8mb4_bin compares identifiers and error texts
-- byte by byte, as SQLite does (error texts are stored trimmed, so its padding rule never matters). A
-- job's row holds its counters, step times and the encoded DDSketch of its sub-job run times; its
-- per-event and per-sub-job bookkeeping lives in stats_events, stats_subjobs and stats_attempts until the
-- job ends. MySQL commits each DDL statement on its own, so every statement can run again after a failure
-- halfway.
CREATE TABLE IF NOT EXISTS stats_jobs (
    job_id           VARCHAR(191) NOT NULL,
    tenant           VARCHAR(191) NOT NULL DEFAULT '',
    type             VARCHAR(191) NOT NULL DEFAULT '',
    created_at       BIGINT       NOT NULL DEFAULT 0,
    step1_done       BIGINT       NOT NULL DEFAULT 0,
    step2_start      BIGINT       NOT NULL DEFAULT 0,
    step2_done       BIGINT       NOT NULL DEFAULT 0,
    step3_done       BIGINT       NOT NULL DEFAULT 0,
    ended_at         BIGINT       NOT NULL DEFAULT 0,
    outcome          VARCHAR(16)  NOT NULL DEFAULT '',
    total            BIGINT       NOT NULL DEFAULT 0,
    step1_attempts   BIGINT       NOT NULL DEFAULT 0,
    step3_attempts   BIGINT       NOT NULL DEFAULT 0,
    subjobs          BIGINT       NOT NULL DEFAULT 0,
    subjob_attempts  BIGINT       NOT NULL DEFAULT 0,
    succeeded        BIGINT       NOT NULL DEFAULT 0,
    timed_out        BIGINT       NOT NULL DEFAULT 0,
    duplicates       BIGINT       NOT NULL DEFAULT 0,
    step2_closed     INT          NOT NULL DEFAULT 0,
    step2_succeeded  BIGINT       NOT NULL DEFAULT 0,
    step2_failed     BIGINT       NOT NULL DEFAULT 0,
    final_total      BIGINT       NOT NULL DEFAULT 0,
    final_succeeded  BIGINT       NOT NULL DEFAULT 0,
    final_failed     BIGINT       NOT NULL DEFAULT 0,
    final_retries    BIGINT       NOT NULL DEFAULT 0,
    final_timed_out  BIGINT       NOT NULL DEFAULT 0,
    final_duplicates BIGINT       NOT NULL DEFAULT 0,
    final_late       BIGINT       NOT NULL DEFAULT 0,
    duration_sum     BIGINT       NOT NULL DEFAULT 0,
    durations        MEDIUMBLOB,
    PRIMARY KEY (job_id),
    -- Aggregates select a tenant's or a type's jobs by creation time.
    KEY stats_jobs_tenant (tenant, created_at),
    KEY stats_jobs_type (type, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The ids of the reports applied to a running job.
CREATE TABLE IF NOT EXISTS stats_events (
    job_id   VARCHAR(191) NOT NULL,
    event_id VARCHAR(191) NOT NULL,
    PRIMARY KEY (job_id, event_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Per sub-job of a running job: its highest attempt, and the success that counts (success_attempt 0: none).
CREATE TABLE IF NOT EXISTS stats_subjobs (
    job_id           VARCHAR(191) NOT NULL,
    idx              BIGINT       NOT NULL,
    max_attempt      BIGINT       NOT NULL DEFAULT 0,
    success_attempt  BIGINT       NOT NULL DEFAULT 0,
    success_at       BIGINT       NOT NULL DEFAULT 0,
    success_duration BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Per failed or timed-out attempt of a running job (idx 0 for steps 1 and 3).
CREATE TABLE IF NOT EXISTS stats_attempts (
    job_id     VARCHAR(191) NOT NULL,
    step       INT          NOT NULL,
    idx        BIGINT       NOT NULL,
    attempt    BIGINT       NOT NULL,
    error_text VARCHAR(255) NOT NULL DEFAULT '',
    timed_out  INT          NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, step, idx, attempt)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Sub-job completions per job and one-second bucket (the bucket's start).
CREATE TABLE IF NOT EXISTS stats_completions (
    job_id    VARCHAR(191) NOT NULL,
    bucket    BIGINT       NOT NULL,
    completed BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, bucket)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Failed attempts per job and normalised error text (at most 200 characters).
CREATE TABLE IF NOT EXISTS stats_errors (
    job_id      VARCHAR(191) NOT NULL,
    message     VARCHAR(255) NOT NULL,
    occurrences BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, message)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE IF EXISTS stats_errors;
DROP TABLE IF EXISTS stats_completions;
DROP TABLE IF EXISTS stats_attempts;
DROP TABLE IF EXISTS stats_subjobs;
DROP TABLE IF EXISTS stats_events;
DROP TABLE IF EXISTS stats_jobs;
