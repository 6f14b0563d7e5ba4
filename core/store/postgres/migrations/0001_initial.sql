-- Jobs, sheets and attempts: the one state model (SPEC §2). The twin of the SQLite store's
-- migration of the same number, in PostgreSQL's types (times are timestamptz, microseconds).
CREATE TABLE jobs (
    job_id           TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    description      TEXT,
    status           TEXT NOT NULL,
    pause_reason     TEXT,
    error            TEXT,
    priority         INTEGER NOT NULL DEFAULT 5,
    workspace        TEXT NOT NULL,
    spec_json        TEXT NOT NULL,
    spec_fingerprint TEXT NOT NULL,
    spec_path        TEXT,
    labels_json      TEXT NOT NULL DEFAULT '[]',
    total_sheets     INTEGER NOT NULL,
    completed_sheets INTEGER NOT NULL DEFAULT 0,
    failed_sheets    INTEGER NOT NULL DEFAULT 0,
    submitted_at     TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL,
    conductor_pid    INTEGER,
    snapshot_path    TEXT
);
CREATE INDEX jobs_by_submitted ON jobs (submitted_at DESC, job_id DESC);
CREATE INDEX jobs_by_status ON jobs (status, submitted_at DESC, job_id DESC);
CREATE INDEX jobs_by_name ON jobs (name, submitted_at DESC, job_id DESC);
CREATE INDEX jobs_by_completed ON jobs (completed_at);

CREATE TABLE job_labels (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    label  TEXT NOT NULL,
    PRIMARY KEY (label, job_id)
);
CREATE INDEX job_labels_by_job ON job_labels (job_id);

CREATE TABLE sheets (
    job_id           TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    sheet_num        INTEGER NOT NULL,
    name             TEXT,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    retries_used     INTEGER NOT NULL DEFAULT 0,
    rate_limit_hits  INTEGER NOT NULL DEFAULT 0,
    depends_on_json  TEXT NOT NULL DEFAULT '[]',
    instrument       TEXT NOT NULL,
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    duration_seconds DOUBLE PRECISION,
    last_error       TEXT,
    error_category   TEXT,
    waiting_reason   TEXT,
    waiting_until    TIMESTAMPTZ,
    output_tail      TEXT,
    log_path         TEXT,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, sheet_num)
);
CREATE INDEX sheets_by_status ON sheets (status, job_id);

-- Execution history: one row per attempt, inserted when it starts (outcome NULL while in
-- flight) so a crash still leaves a row that recovery marks `interrupted`.
CREATE TABLE attempts (
    id               BIGSERIAL PRIMARY KEY,
    job_id           TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    sheet_num        INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    ended_at         TIMESTAMPTZ,
    exit_code        INTEGER,
    signal           INTEGER,
    duration_seconds DOUBLE PRECISION,
    outcome          TEXT,
    error_category   TEXT,
    error            TEXT,
    validations_json TEXT NOT NULL DEFAULT '[]',
    log_path         TEXT,
    pid              INTEGER,
    pgid             INTEGER,
    pid_start_time   DOUBLE PRECISION,
    UNIQUE (job_id, sheet_num, attempt)
);
CREATE INDEX attempts_in_flight ON attempts (job_id) WHERE outcome IS NULL;
