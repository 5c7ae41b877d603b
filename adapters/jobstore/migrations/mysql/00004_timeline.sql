-- +goose Up
-- The status timeline, a read model built from the event log by the "status" consumer group and
-- rebuilt by replaying it (see app/timeline). Times are unix microseconds (0 = unset); durations are
-- nanoseconds. MySQL commits each DDL statement on its own, so every statement can run again after a
-- failure halfway (IF NOT EXISTS / IF EXISTS). TEXT columns get no DEFAULT; the store writes them.

-- One row per job the projection has seen an event of; tenant and type stay empty until JobStarted.
CREATE TABLE IF NOT EXISTS timeline_jobs (
    job_id       VARCHAR(191) NOT NULL,
    tenant       VARCHAR(191) NOT NULL DEFAULT '',
    type         VARCHAR(191) NOT NULL DEFAULT '',
    state        VARCHAR(32)  NOT NULL DEFAULT '',
    state_seq    BIGINT       NOT NULL DEFAULT 0,
    seq          BIGINT       NOT NULL DEFAULT 0,
    total        BIGINT       NOT NULL DEFAULT 0,
    step2_closed BOOLEAN      NOT NULL DEFAULT FALSE,
    started_at   BIGINT       NOT NULL DEFAULT 0,
    ended_at     BIGINT       NOT NULL DEFAULT 0,
    error        TEXT         NOT NULL,
    n_total      BIGINT       NOT NULL DEFAULT 0,
    n_succeeded  BIGINT       NOT NULL DEFAULT 0,
    n_failed     BIGINT       NOT NULL DEFAULT 0,
    n_retries    BIGINT       NOT NULL DEFAULT 0,
    n_timed_out  BIGINT       NOT NULL DEFAULT 0,
    n_duplicates BIGINT       NOT NULL DEFAULT 0,
    n_late       BIGINT       NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A job's events in the order they were applied (pos 1, 2, …); event_id makes each message count once.
-- sub_index is -1 on events that are not about a sub-job.
CREATE TABLE IF NOT EXISTS timeline_events (
    job_id      VARCHAR(191) NOT NULL,
    pos         BIGINT       NOT NULL,
    event_id    VARCHAR(191) NOT NULL,
    kind        VARCHAR(64)  NOT NULL,
    seq         BIGINT       NOT NULL,
    occurred_at BIGINT       NOT NULL,
    step        INT          NOT NULL,
    sub_index   BIGINT       NOT NULL,
    attempt     INT          NOT NULL,
    duration_ns BIGINT       NOT NULL,
    detail      TEXT         NOT NULL,
    PRIMARY KEY (job_id, pos),
    UNIQUE KEY timeline_events_event (event_id),
    KEY timeline_events_subjob (job_id, sub_index)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS timeline_subjobs (
    job_id          VARCHAR(191) NOT NULL,
    idx             BIGINT       NOT NULL,
    state           VARCHAR(32)  NOT NULL,
    attempts        INT          NOT NULL,
    failed_attempts INT          NOT NULL,
    timed_out       INT          NOT NULL,
    last_error      TEXT         NOT NULL,
    last_error_at   BIGINT       NOT NULL,
    duration_ns     BIGINT       NOT NULL,
    finished_at     BIGINT       NOT NULL,
    PRIMARY KEY (job_id, idx),
    KEY timeline_subjobs_state (job_id, state, idx)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- +goose Down
DROP TABLE IF EXISTS timeline_subjobs;
DROP TABLE IF EXISTS timeline_events;
DROP TABLE IF EXISTS timeline_jobs;
