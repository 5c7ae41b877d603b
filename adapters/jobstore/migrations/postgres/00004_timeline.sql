-- +goose Up
-- The status timeline, a read model built from the event log by the "status" consumer group and
-- rebuilt by replaying it (see app/timeline). Times are unix microseconds (0 = unset); durations are
-- nanoseconds. Identifiers use the "C" collation, as in the job tables.

-- One row per job the projection has seen an event of; tenant and type stay empty until JobStarted.
CREATE TABLE timeline_jobs (
    job_id       TEXT COLLATE "C" PRIMARY KEY,
    tenant       TEXT COLLATE "C" NOT NULL DEFAULT '',
    type         TEXT COLLATE "C" NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT '',
    state_seq    BIGINT  NOT NULL DEFAULT 0,
    seq          BIGINT  NOT NULL DEFAULT 0,
    total        BIGINT  NOT NULL DEFAULT 0,
    step2_closed BOOLEAN NOT NULL DEFAULT FALSE,
    started_at   BIGINT  NOT NULL DEFAULT 0,
    ended_at     BIGINT  NOT NULL DEFAULT 0,
    error        TEXT    NOT NULL DEFAULT '',
    n_total      BIGINT  NOT NULL DEFAULT 0,
    n_succeeded  BIGINT  NOT NULL DEFAULT 0,
    n_failed     BIGINT  NOT NULL DEFAULT 0,
    n_retries    BIGINT  NOT NULL DEFAULT 0,
    n_timed_out  BIGINT  NOT NULL DEFAULT 0,
    n_duplicates BIGINT  NOT NULL DEFAULT 0,
    n_late       BIGINT  NOT NULL DEFAULT 0
);

-- A job's events in the order they were applied (pos 1, 2, …); event_id makes each message count once.
-- sub_index is -1 on events that are not about a sub-job.
CREATE TABLE timeline_events (
    job_id      TEXT COLLATE "C" NOT NULL,
    pos         BIGINT  NOT NULL,
    event_id    TEXT COLLATE "C" NOT NULL,
    kind        TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    occurred_at BIGINT  NOT NULL,
    step        INTEGER NOT NULL,
    sub_index   BIGINT  NOT NULL,
    attempt     INTEGER NOT NULL,
    duration_ns BIGINT  NOT NULL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (job_id, pos)
);
CREATE UNIQUE INDEX timeline_events_event ON timeline_events (event_id);
CREATE INDEX timeline_events_subjob ON timeline_events (job_id, sub_index);

CREATE TABLE timeline_subjobs (
    job_id          TEXT COLLATE "C" NOT NULL,
    idx             BIGINT  NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL,
    timed_out       INTEGER NOT NULL,
    last_error      TEXT    NOT NULL,
    last_error_at   BIGINT  NOT NULL,
    duration_ns     BIGINT  NOT NULL,
    finished_at     BIGINT  NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX timeline_subjobs_state ON timeline_subjobs (job_id, state, idx);

-- +goose Down
DROP TABLE timeline_subjobs;
DROP TABLE timeline_events;
DROP TABLE timeline_jobs;
