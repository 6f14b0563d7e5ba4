-- Every statement the SQLite store runs, by name. Loaded once by podium.core.store.sqlite.
-- Named parameters (:name) only, so call sites read as records.

-- name: insert_job
INSERT INTO jobs (job_id, name, description, status, pause_reason, error, priority, workspace,
                  spec_json, spec_fingerprint, spec_path, labels_json, total_sheets,
                  completed_sheets, failed_sheets, submitted_at, started_at, completed_at,
                  updated_at, conductor_pid, snapshot_path)
VALUES (:job_id, :name, :description, :status, :pause_reason, :error, :priority, :workspace,
        :spec_json, :spec_fingerprint, :spec_path, :labels_json, :total_sheets,
        :completed_sheets, :failed_sheets, :submitted_at, :started_at, :completed_at,
        :updated_at, :conductor_pid, :snapshot_path);

-- name: update_job
UPDATE jobs SET name = :name, description = :description, status = :status,
       pause_reason = :pause_reason, error = :error, priority = :priority,
       workspace = :workspace, spec_json = :spec_json, spec_fingerprint = :spec_fingerprint,
       spec_path = :spec_path, labels_json = :labels_json, total_sheets = :total_sheets,
       started_at = :started_at, completed_at = :completed_at, updated_at = :updated_at,
       conductor_pid = :conductor_pid, snapshot_path = :snapshot_path
WHERE job_id = :job_id;

-- name: insert_label
INSERT OR IGNORE INTO job_labels (job_id, label) VALUES (:job_id, :label);

-- name: delete_labels
DELETE FROM job_labels WHERE job_id = :job_id;

-- name: refresh_job_progress
-- Progress is recomputed from the sheet rows in the same transaction as the sheet write,
-- so the job's counters can never drift from its sheets.
UPDATE jobs SET
    completed_sheets = (SELECT count(*) FROM sheets
                        WHERE sheets.job_id = jobs.job_id AND status = 'completed'),
    failed_sheets = (SELECT count(*) FROM sheets
                     WHERE sheets.job_id = jobs.job_id AND status = 'failed'),
    total_sheets = (SELECT count(*) FROM sheets WHERE sheets.job_id = jobs.job_id)
WHERE job_id = :job_id;

-- name: select_job
SELECT * FROM jobs WHERE job_id = :job_id;

-- name: select_jobs_base
SELECT * FROM jobs

-- name: select_job_ids_completed_before
SELECT job_id FROM jobs WHERE completed_at IS NOT NULL AND completed_at < :before;

-- name: count_jobs_by_status
SELECT status, count(*) AS n FROM jobs GROUP BY status;

-- name: select_jobs_by_statuses
SELECT * FROM jobs WHERE status IN (SELECT value FROM json_each(:statuses))
ORDER BY priority, submitted_at, job_id;

-- name: delete_job
DELETE FROM jobs WHERE job_id = :job_id;

-- name: upsert_sheet
INSERT INTO sheets (job_id, sheet_num, name, status, attempts, retries_used, rate_limit_hits,
                    depends_on_json, instrument, started_at, completed_at, duration_seconds,
                    last_error, error_category, waiting_reason, waiting_until, output_tail,
                    log_path, updated_at)
VALUES (:job_id, :sheet_num, :name, :status, :attempts, :retries_used, :rate_limit_hits,
        :depends_on_json, :instrument, :started_at, :completed_at, :duration_seconds,
        :last_error, :error_category, :waiting_reason, :waiting_until, :output_tail,
        :log_path, :updated_at)
ON CONFLICT (job_id, sheet_num) DO UPDATE SET
    name = excluded.name, status = excluded.status, attempts = excluded.attempts,
    retries_used = excluded.retries_used, rate_limit_hits = excluded.rate_limit_hits,
    depends_on_json = excluded.depends_on_json, instrument = excluded.instrument,
    started_at = excluded.started_at, completed_at = excluded.completed_at,
    duration_seconds = excluded.duration_seconds, last_error = excluded.last_error,
    error_category = excluded.error_category, waiting_reason = excluded.waiting_reason,
    waiting_until = excluded.waiting_until, output_tail = excluded.output_tail,
    log_path = excluded.log_path, updated_at = excluded.updated_at;

-- name: select_sheets
SELECT * FROM sheets WHERE job_id = :job_id ORDER BY sheet_num;

-- name: select_sheet
SELECT * FROM sheets WHERE job_id = :job_id AND sheet_num = :sheet_num;

-- name: select_sheets_page
SELECT * FROM sheets
WHERE job_id = :job_id
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
ORDER BY sheet_num LIMIT :limit OFFSET :offset;

-- name: count_sheets_matching
SELECT count(*) FROM sheets
WHERE job_id = :job_id
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)));

-- name: count_sheets_by_status
SELECT status, count(*) AS n FROM sheets WHERE job_id = :job_id GROUP BY status;

-- name: count_running_sheets
SELECT count(*) FROM sheets WHERE status = 'running';

-- name: upsert_attempt
INSERT INTO attempts (job_id, sheet_num, attempt, started_at, ended_at, exit_code, signal,
                      duration_seconds, outcome, error_category, error, validations_json,
                      log_path, pid, pgid, pid_start_time)
VALUES (:job_id, :sheet_num, :attempt, :started_at, :ended_at, :exit_code, :signal,
        :duration_seconds, :outcome, :error_category, :error, :validations_json,
        :log_path, :pid, :pgid, :pid_start_time)
ON CONFLICT (job_id, sheet_num, attempt) DO UPDATE SET
    ended_at = excluded.ended_at, exit_code = excluded.exit_code, signal = excluded.signal,
    duration_seconds = excluded.duration_seconds, outcome = excluded.outcome,
    error_category = excluded.error_category, error = excluded.error,
    validations_json = excluded.validations_json, log_path = excluded.log_path,
    pid = excluded.pid, pgid = excluded.pgid, pid_start_time = excluded.pid_start_time;

-- name: select_attempts
SELECT * FROM attempts
WHERE job_id = :job_id AND (:sheet_num IS NULL OR sheet_num = :sheet_num)
ORDER BY sheet_num, attempt LIMIT :limit OFFSET :offset;

-- name: select_attempt
SELECT * FROM attempts WHERE job_id = :job_id AND sheet_num = :sheet_num AND attempt = :attempt;

-- name: select_latest_attempt
SELECT * FROM attempts WHERE job_id = :job_id AND sheet_num = :sheet_num
ORDER BY attempt DESC LIMIT 1;

-- name: count_attempts
SELECT count(*) FROM attempts
WHERE job_id = :job_id AND (:sheet_num IS NULL OR sheet_num = :sheet_num);

-- name: count_attempts_by_outcome
SELECT coalesce(outcome, 'in_flight') AS outcome, count(*) AS n,
       coalesce(sum(duration_seconds), 0) AS seconds
FROM attempts WHERE job_id = :job_id GROUP BY outcome;

-- name: select_in_flight_attempts
-- Every attempt without an outcome, whatever its job's status: a conductor that died during a
-- cancel or a deadline stop had already marked the job terminal while its sheets still ran.
SELECT * FROM attempts WHERE outcome IS NULL ORDER BY job_id, sheet_num;

-- name: select_orphaned_jobs
-- Jobs a dead conductor left mid-flight: still marked active with sheets in flight.
SELECT DISTINCT jobs.* FROM jobs JOIN sheets USING (job_id)
WHERE jobs.status IN ('queued', 'running', 'paused')
  AND sheets.status IN ('running', 'waiting')
ORDER BY jobs.submitted_at;

-- name: upsert_rate_limit
INSERT INTO rate_limits (instrument, until, reason, set_at)
VALUES (:instrument, :until, :reason, :set_at)
ON CONFLICT (instrument) DO UPDATE SET
    until = excluded.until, reason = excluded.reason, set_at = excluded.set_at;

-- name: select_rate_limits
SELECT * FROM rate_limits ORDER BY instrument;

-- name: delete_rate_limit
DELETE FROM rate_limits WHERE instrument = :instrument;

-- name: delete_terminal_job
-- Active jobs (queued, running, paused) are never deleted, whatever the caller asked.
DELETE FROM jobs WHERE job_id = :job_id AND status IN ('completed', 'failed', 'cancelled');

-- name: update_snapshot_path
-- One column only: the snapshot is taken after the terminal transition, outside the manager's
-- lock, and must never write back a stale copy of the job's status.
UPDATE jobs SET snapshot_path = :snapshot_path WHERE job_id = :job_id;

-- name: update_attempt_process
UPDATE attempts SET pid = :pid, pgid = :pgid, pid_start_time = :pid_start_time
WHERE job_id = :job_id AND sheet_num = :sheet_num AND attempt = :attempt;
