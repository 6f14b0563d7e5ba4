-- Engine v2: every row carries a version (writes are compare-and-set on it), attempts carry
-- their owner and lease, rate-limit holds are keyed by a hold key and remember a release in
-- progress, a pending modify is stored on its job, and counters are kept by triggers instead
-- of being recounted from every sheet on every write.
ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN pending_resume INTEGER;
ALTER TABLE jobs DROP COLUMN conductor_pid;
ALTER TABLE sheets ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE attempts ADD COLUMN conductor_id TEXT;
ALTER TABLE attempts ADD COLUMN lease_expires_at TEXT;
ALTER TABLE attempts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE INDEX attempts_in_flight_by_owner ON attempts (conductor_id) WHERE outcome IS NULL;

CREATE TABLE holds (
    hold_key TEXT PRIMARY KEY,
    until    TEXT NOT NULL,
    reason   TEXT,
    set_at   TEXT NOT NULL,
    released INTEGER NOT NULL DEFAULT 0,
    version  INTEGER NOT NULL DEFAULT 1
);
INSERT INTO holds (hold_key, until, reason, set_at)
SELECT instrument, until, reason, set_at FROM rate_limits;
DROP TABLE rate_limits;

-- Jobs by status, kept in step by triggers so `status` never counts the jobs table.
CREATE TABLE job_status_counts (
    status TEXT PRIMARY KEY,
    n      INTEGER NOT NULL
);
INSERT INTO job_status_counts (status, n)
VALUES ('queued', 0), ('running', 0), ('paused', 0), ('completed', 0), ('failed', 0),
       ('cancelled', 0);
UPDATE job_status_counts
SET n = (SELECT count(*) FROM jobs WHERE jobs.status = job_status_counts.status);

CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs BEGIN
    UPDATE job_status_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER jobs_counted_on_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_status_counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE TRIGGER jobs_counted_on_status AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status BEGIN
    UPDATE job_status_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_status_counts SET n = n + 1 WHERE status = NEW.status;
END;

-- A job's progress follows its sheet rows in the same transaction, by delta.
UPDATE jobs SET
    total_sheets = (SELECT count(*) FROM sheets WHERE sheets.job_id = jobs.job_id),
    completed_sheets = (SELECT count(*) FROM sheets
                        WHERE sheets.job_id = jobs.job_id AND status = 'completed'),
    failed_sheets = (SELECT count(*) FROM sheets
                     WHERE sheets.job_id = jobs.job_id AND status = 'failed');

CREATE TRIGGER sheets_counted_on_insert AFTER INSERT ON sheets BEGIN
    UPDATE jobs SET total_sheets = total_sheets + 1,
        completed_sheets = completed_sheets + (NEW.status = 'completed'),
        failed_sheets = failed_sheets + (NEW.status = 'failed')
    WHERE job_id = NEW.job_id;
END;
CREATE TRIGGER sheets_counted_on_delete AFTER DELETE ON sheets BEGIN
    UPDATE jobs SET total_sheets = total_sheets - 1,
        completed_sheets = completed_sheets - (OLD.status = 'completed'),
        failed_sheets = failed_sheets - (OLD.status = 'failed')
    WHERE job_id = OLD.job_id;
END;
CREATE TRIGGER sheets_counted_on_status AFTER UPDATE OF status ON sheets
WHEN OLD.status <> NEW.status BEGIN
    UPDATE jobs SET
        completed_sheets = completed_sheets + (NEW.status = 'completed')
                                            - (OLD.status = 'completed'),
        failed_sheets = failed_sheets + (NEW.status = 'failed') - (OLD.status = 'failed')
    WHERE job_id = NEW.job_id;
END;
