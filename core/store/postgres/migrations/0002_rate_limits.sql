-- Rate-limit waits are shared by every sheet of an instrument across jobs and must survive a
-- restart, so they live in the store rather than in memory.
CREATE TABLE rate_limits (
    instrument TEXT PRIMARY KEY,
    until      TIMESTAMPTZ NOT NULL,
    reason     TEXT,
    set_at     TIMESTAMPTZ NOT NULL
);
