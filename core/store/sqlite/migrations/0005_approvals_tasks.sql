-- Approval sheets: the attempt of an approval sheet records the decision, who made it and
-- their note. A pending approval is its sheet row (waiting, waiting_reason 'approval'), so it
-- survives any restart; this index finds them without scanning every sheet.
ALTER TABLE attempts ADD COLUMN decision TEXT;
ALTER TABLE attempts ADD COLUMN decided_by TEXT;
ALTER TABLE attempts ADD COLUMN note TEXT;
CREATE INDEX sheets_awaiting_approval ON sheets (job_id, sheet_num)
WHERE status = 'waiting' AND waiting_reason = 'approval';

-- Durable tasks (the MCP tasks extension): a `run_job` call that answered with a task handle.
-- The row exists before the answer is sent; its status is derived from its job on every read,
-- so it never drifts from the job. Expired rows are purged.
CREATE TABLE tasks (
    task_id          TEXT PRIMARY KEY,
    job_id           TEXT NOT NULL,
    tool             TEXT NOT NULL,
    created_by       TEXT,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    ttl_ms           INTEGER NOT NULL,
    poll_interval_ms INTEGER NOT NULL,
    version          INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX tasks_by_expiry ON tasks (expires_at);
CREATE INDEX tasks_by_job ON tasks (job_id);
