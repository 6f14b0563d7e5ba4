-- Every statement the SQLite store runs, by name. Loaded once by podium.core.store.sqlite.
-- Named parameters (:name) only, so call sites read as records. `{table.columns}`,
-- `{table.values}` and `{table.assign}` expand to the columns the row declarations in
-- podium.core.store.rows map to (see codec.py), so no column list is copied by hand.
-- Every UPDATE and DELETE of a versioned row is conditional on the version it was read at.

-- name: insert_job
-- Counters start at zero: the sheet triggers count the sheets as they are inserted.
INSERT INTO jobs ({jobs.columns}, spec_json)
VALUES ({jobs.values}, :spec_json);

-- name: update_job
UPDATE jobs SET {jobs.assign}, version = version + 1
WHERE job_id = :job_id AND version = :version;

-- name: lock_job
UPDATE jobs SET version = version + 1 WHERE job_id = :job_id AND version = :version;

-- name: update_job_spec
UPDATE jobs SET spec_json = :spec_json, labels_json = :labels_json WHERE job_id = :job_id;

-- name: insert_label
INSERT OR IGNORE INTO job_labels (job_id, label) VALUES (:job_id, :label);

-- name: delete_labels
DELETE FROM job_labels WHERE job_id = :job_id;

-- name: delete_terminal_job
-- Active jobs (queued, running, paused) are never deleted, whatever the caller asked.
DELETE FROM jobs
WHERE job_id = :job_id AND version = :version
  AND status IN ('completed', 'failed', 'cancelled');

-- name: select_job
SELECT {jobs.columns} FROM jobs WHERE job_id = :job_id;

-- name: select_job_version
SELECT version FROM jobs WHERE job_id = :job_id;

-- name: select_spec
SELECT spec_json FROM jobs WHERE job_id = :job_id;

-- name: select_job_with_spec
SELECT {jobs.columns}, spec_json FROM jobs WHERE job_id = :job_id;

-- name: select_jobs_base
SELECT {jobs.columns} FROM jobs

-- name: select_jobs_by_statuses
SELECT {jobs.columns} FROM jobs WHERE status IN (SELECT value FROM json_each(:statuses))
ORDER BY priority, submitted_at, job_id;

-- name: select_job_files
SELECT job_id, status, completed_at, snapshot_path FROM jobs;

-- name: select_jobs_with_pending_hooks
SELECT {jobs.columns} FROM jobs WHERE pending_hooks_json <> '[]' ORDER BY completed_at, job_id;

-- name: count_jobs_by_status
SELECT status, n FROM job_status_counts WHERE n > 0;

-- name: insert_sheet
INSERT INTO sheets ({sheets.columns}) VALUES ({sheets.values});

-- name: update_sheet
UPDATE sheets SET {sheets.assign}, version = version + 1
WHERE job_id = :job_id AND sheet_num = :sheet_num AND version = :version;

-- name: select_sheets
SELECT {sheets.columns} FROM sheets WHERE job_id = :job_id ORDER BY sheet_num;

-- name: select_some_sheets
SELECT {sheets.columns} FROM sheets
WHERE job_id = :job_id AND sheet_num IN (SELECT value FROM json_each(:nums))
ORDER BY sheet_num;

-- name: select_sheet
SELECT {sheets.columns} FROM sheets WHERE job_id = :job_id AND sheet_num = :sheet_num;

-- name: select_sheets_page
SELECT {sheets.columns} FROM sheets
WHERE job_id = :job_id
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
ORDER BY sheet_num LIMIT :limit OFFSET :offset;

-- name: count_sheets_matching
SELECT count(*) FROM sheets
WHERE job_id = :job_id
  AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)));

-- name: count_running_sheets
SELECT count(*) FROM sheets WHERE status = 'running';

-- name: insert_attempt
INSERT INTO attempts ({attempts.columns}) VALUES ({attempts.values});

-- name: update_attempt
UPDATE attempts SET {attempts.assign}, version = version + 1
WHERE job_id = :job_id AND sheet_num = :sheet_num AND attempt = :attempt
  AND version = :version;

-- name: renew_leases
-- Only attempts still in flight and still ours: a reclaimed attempt is not renewed.
UPDATE attempts SET lease_expires_at = :until, lease_renewed_at = :renewed_at
WHERE conductor_id = :conductor_id AND outcome IS NULL;

-- name: select_attempts
SELECT {attempts.columns} FROM attempts
WHERE job_id = :job_id AND (:sheet_num IS NULL OR sheet_num = :sheet_num)
ORDER BY sheet_num, attempt LIMIT :limit OFFSET :offset;

-- name: count_attempts
SELECT count(*) FROM attempts
WHERE job_id = :job_id AND (:sheet_num IS NULL OR sheet_num = :sheet_num);

-- name: select_attempt
SELECT {attempts.columns} FROM attempts
WHERE job_id = :job_id AND sheet_num = :sheet_num AND attempt = :attempt;

-- name: select_latest_attempt
SELECT {attempts.columns} FROM attempts WHERE job_id = :job_id AND sheet_num = :sheet_num
ORDER BY attempt DESC LIMIT 1;

-- name: select_in_flight_attempts
-- Every attempt without an outcome, whatever its job's status: a conductor that died during a
-- cancel or a deadline stop had already marked the job terminal while its sheets still ran.
SELECT {attempts.columns} FROM attempts WHERE outcome IS NULL ORDER BY job_id, sheet_num;

-- name: insert_hold
INSERT INTO holds ({holds.columns}) VALUES ({holds.values});

-- name: update_hold
UPDATE holds SET {holds.assign}, version = version + 1
WHERE hold_key = :hold_key AND version = :version;

-- name: delete_hold
DELETE FROM holds WHERE hold_key = :hold_key AND version = :version;

-- name: select_holds
SELECT {holds.columns} FROM holds ORDER BY hold_key;

-- name: select_job_versions
SELECT job_id, version FROM jobs WHERE status IN ('queued', 'running', 'paused');

-- name: upsert_conductor
INSERT INTO conductors ({conductors.columns}) VALUES ({conductors.values})
ON CONFLICT (conductor_id) DO UPDATE SET {conductors.assign};

-- name: select_conductors
SELECT {conductors.columns} FROM conductors ORDER BY conductor_id;

-- name: delete_conductor
DELETE FROM conductors WHERE conductor_id = :conductor_id;

-- name: select_pending_approvals
SELECT {sheets.columns} FROM sheets
WHERE status = 'waiting' AND waiting_reason = 'approval'
ORDER BY updated_at, job_id, sheet_num LIMIT :limit;

-- name: count_pending_approvals
SELECT count(*) FROM sheets WHERE status = 'waiting' AND waiting_reason = 'approval';

-- name: insert_task
INSERT INTO tasks ({tasks.columns}) VALUES ({tasks.values});

-- name: delete_task
DELETE FROM tasks WHERE task_id = :task_id;

-- name: select_task
SELECT {tasks.columns} FROM tasks WHERE task_id = :task_id;

-- name: select_expired_tasks
SELECT task_id FROM tasks WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit;

-- name: select_next_task_expiry
SELECT min(expires_at) FROM tasks;

-- name: finish_task
-- The first final state stands: a task that has one keeps it.
UPDATE tasks SET final_status = :final_status, final_message = :final_message,
  final_at = :final_at, final_error = :final_error, final_job_failed = :final_job_failed,
  final_detail_json = :final_detail_json, version = version + 1
WHERE task_id = :task_id AND final_status IS NULL;

-- name: select_open_tasks
SELECT {tasks.columns} FROM tasks
WHERE final_status IS NULL AND job_id IN (SELECT value FROM json_each(:job_ids))
ORDER BY task_id;
