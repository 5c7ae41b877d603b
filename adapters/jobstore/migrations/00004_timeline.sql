-- +goose Up
-- The status timeline, a read model built from the event log by the "status" consumer group and
-- rebuilt by replaying it (see app/timeline). Times are unix microseconds (0 = unset); durations are
-- nanoseconds.

-- One row per job the projection has seen an event of; tenant and type stay empty until JobStarted.
CREATE TABLE timeline_jobs (
    job_id       TEXT    PRIMARY KEY,
    tenant       TEXT    NOT NULL DEFAULT '',
    type         TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL DEFAULT '',
    state_seq    INTEGER NOT NULL DEFAULT 0,
    seq          INTEGER NOT NULL DEFAULT 0,
    total        INTEGER NOT NULL DEFAULT 0,
    step2_closed INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL DEFAULT 0,
    ended_at     INTEGER NOT NULL DEFAULT 0,
    error        TEXT    NOT NULL DEFAULT '',
    n_total      INTEGER NOT NULL DEFAULT 0,
    n_succeeded  INTEGER NOT NULL DEFAULT 0,
    n_failed     INTEGER NOT NULL DEFAULT 0,
    n_retries    INTEGER NOT NULL DEFAULT 0,
    n_timed_out  INTEGER NOT NULL DEFAULT 0,
    n_duplicates INTEGER NOT NULL DEFAULT 0,
    n_late       INTEGER NOT NULL DEFAULT 0
);

-- A job's events in the order they were applied (pos 1, 2, …); event_id makes each message count once.
-- sub_index is -1 on events that are not about a sub-job.
CREATE TABLE timeline_events (
    job_id      TEXT    NOT NULL,
    pos         INTEGER NOT NULL,
    event_id    TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    step        INTEGER NOT NULL,
    sub_index   INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    duration_ns INTEGER NOT NULL,
    detail      TEXT    NOT NULL,
    PRIMARY KEY (job_id, pos)
) WITHOUT ROWID;
CREATE UNIQUE INDEX timeline_events_event ON timeline_events (event_id);
CREATE INDEX timeline_events_subjob ON timeline_events (job_id, sub_index);

CREATE TABLE timeline_subjobs (
    job_id          TEXT    NOT NULL,
    idx             INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    failed_attempts INTEGER NOT NULL,
    timed_out       INTEGER NOT NULL,
    last_error      TEXT    NOT NULL,
    last_error_at   INTEGER NOT NULL,
    duration_ns     INTEGER NOT NULL,
    finished_at     INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE INDEX timeline_subjobs_state ON timeline_subjobs (job_id, state, idx);

-- +goose Down
DROP TABLE timeline_subjobs;
DROP TABLE timeline_events;
DROP TABLE timeline_jobs;
