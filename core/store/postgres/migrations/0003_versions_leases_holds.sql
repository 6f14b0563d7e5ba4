-- Engine v2: every row carries a version (writes are compare-and-set on it), attempts carry
-- their owner and lease, rate-limit holds are keyed by a hold key and remember a release in
-- progress, a pending modify is stored on its job, and counters are kept by triggers instead
-- of being recounted from every sheet on every write.
ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN pending_resume BOOLEAN;
ALTER TABLE jobs DROP COLUMN conductor_pid;
ALTER TABLE sheets ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE attempts ADD COLUMN conductor_id TEXT;
ALTER TABLE attempts ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE attempts ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
CREATE INDEX attempts_in_flight_by_owner ON attempts (conductor_id) WHERE outcome IS NULL;

CREATE TABLE holds (
    hold_key TEXT PRIMARY KEY,
    until    TIMESTAMPTZ NOT NULL,
    reason   TEXT,
    set_at   TIMESTAMPTZ NOT NULL,
    released BOOLEAN NOT NULL DEFAULT false,
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

CREATE FUNCTION podium_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE job_status_counts SET n = n - 1 WHERE status = OLD.status;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        UPDATE job_status_counts SET n = n + 1 WHERE status = NEW.status;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_counted_on_insert AFTER INSERT ON jobs
FOR EACH ROW EXECUTE FUNCTION podium_count_jobs();
CREATE TRIGGER jobs_counted_on_delete AFTER DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION podium_count_jobs();
CREATE TRIGGER jobs_counted_on_status AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN (OLD.status <> NEW.status) EXECUTE FUNCTION podium_count_jobs();

-- A job's progress follows its sheet rows in the same transaction, by delta.
UPDATE jobs SET
    total_sheets = (SELECT count(*) FROM sheets WHERE sheets.job_id = jobs.job_id),
    completed_sheets = (SELECT count(*) FROM sheets
                        WHERE sheets.job_id = jobs.job_id AND status = 'completed'),
    failed_sheets = (SELECT count(*) FROM sheets
                     WHERE sheets.job_id = jobs.job_id AND status = 'failed');

CREATE FUNCTION podium_count_sheets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE jobs SET total_sheets = total_sheets + 1,
            completed_sheets = completed_sheets + (NEW.status = 'completed')::int,
            failed_sheets = failed_sheets + (NEW.status = 'failed')::int
        WHERE job_id = NEW.job_id;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE jobs SET total_sheets = total_sheets - 1,
            completed_sheets = completed_sheets - (OLD.status = 'completed')::int,
            failed_sheets = failed_sheets - (OLD.status = 'failed')::int
        WHERE job_id = OLD.job_id;
    ELSE
        UPDATE jobs SET
            completed_sheets = completed_sheets + (NEW.status = 'completed')::int
                                                - (OLD.status = 'completed')::int,
            failed_sheets = failed_sheets + (NEW.status = 'failed')::int
                                          - (OLD.status = 'failed')::int
        WHERE job_id = NEW.job_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER sheets_counted_on_insert AFTER INSERT ON sheets
FOR EACH ROW EXECUTE FUNCTION podium_count_sheets();
CREATE TRIGGER sheets_counted_on_delete AFTER DELETE ON sheets
FOR EACH ROW EXECUTE FUNCTION podium_count_sheets();
CREATE TRIGGER sheets_counted_on_status AFTER UPDATE OF status ON sheets
FOR EACH ROW WHEN (OLD.status <> NEW.status) EXECUTE FUNCTION podium_count_sheets();
