-- Every statement the PostgreSQL store runs, by name. Loaded once by
-- podium.core.store.postgres. psycopg's named parameters (%(name)s) only. `{table.columns}`,
-- `{table.values}` and `{table.assign}` expand to the columns the row declarations in
-- podium.core.store.rows map to (see podium.core.store.codec), so no column list is copied
-- by hand. Every UPDATE and DELETE of a versioned row is conditional on the version it was
-- read at and answers with a row when it matched, so a refused row is named.

-- name: lock_jobs
-- The rows a write is about to change, locked first and in one order; a row another
-- conductor's transaction holds is skipped rather than waited for (that writer is moving it
-- on, so this write would be refused anyway), and no two writers ever wait on each other.
SELECT job_id FROM jobs WHERE job_id = ANY(%(ids)s) ORDER BY job_id FOR UPDATE SKIP LOCKED;

-- name: existing_jobs
SELECT job_id FROM jobs WHERE job_id = ANY(%(ids)s);

-- name: lock_holds
SELECT hold_key FROM holds WHERE hold_key = ANY(%(ids)s) ORDER BY hold_key
FOR UPDATE SKIP LOCKED;

-- name: existing_holds
SELECT hold_key FROM holds WHERE hold_key = ANY(%(ids)s);

-- name: insert_job
-- Counters start at zero: the sheet triggers count the sheets as they are inserted.
INSERT INTO jobs ({jobs.columns}, spec_json)
VALUES ({jobs.values}, %(spec_json)s)
ON CONFLICT (job_id) DO NOTHING;

-- name: update_job
UPDATE jobs SET {jobs.assign}, version = version + 1
WHERE job_id = %(job_id)s AND version = %(version)s RETURNING 1;

-- name: lock_job
UPDATE jobs SET version = version + 1
WHERE job_id = %(job_id)s AND version = %(version)s RETURNING 1;

-- name: update_job_spec
UPDATE jobs SET spec_json = %(spec_json)s, labels_json = %(labels_json)s
WHERE job_id = %(job_id)s;

-- name: insert_label
INSERT INTO job_labels (job_id, label) VALUES (%(job_id)s, %(label)s) ON CONFLICT DO NOTHING;

-- name: delete_labels
DELETE FROM job_labels WHERE job_id = %(job_id)s;

-- name: delete_terminal_job
-- Active jobs (queued, running, paused) are never deleted, whatever the caller asked.
DELETE FROM jobs
WHERE job_id = %(job_id)s AND version = %(version)s
  AND status IN ('completed', 'failed', 'cancelled')
RETURNING 1;

-- name: select_job
SELECT {jobs.columns} FROM jobs WHERE job_id = %(job_id)s;

-- name: select_spec
SELECT spec_json FROM jobs WHERE job_id = %(job_id)s;

-- name: select_job_with_spec
SELECT {jobs.columns}, spec_json FROM jobs WHERE job_id = %(job_id)s;

-- name: select_jobs_page
-- One statement for every filter: a filter that is not given is NULL.
SELECT {jobs.columns} FROM jobs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(name)s::text IS NULL OR name = %(name)s::text)
  AND (%(label)s::text IS NULL OR EXISTS (
        SELECT 1 FROM job_labels l WHERE l.job_id = jobs.job_id AND l.label = %(label)s::text))
  AND (%(cursor_at)s::timestamptz IS NULL
       OR (submitted_at, job_id) < (%(cursor_at)s::timestamptz, %(cursor_id)s::text))
ORDER BY submitted_at DESC, job_id DESC
LIMIT %(limit)s;

-- name: select_jobs_by_statuses
SELECT {jobs.columns} FROM jobs WHERE status = ANY(%(statuses)s::text[])
ORDER BY priority, submitted_at, job_id;

-- name: select_job_versions
SELECT job_id, version FROM jobs WHERE status IN ('queued', 'running', 'paused');

-- name: count_jobs_by_status
SELECT status, n FROM job_status_counts WHERE n > 0;

-- name: insert_sheet
INSERT INTO sheets ({sheets.columns}) VALUES ({sheets.values})
ON CONFLICT (job_id, sheet_num) DO NOTHING RETURNING 1;

-- name: update_sheet
UPDATE sheets SET {sheets.assign}, version = version + 1
WHERE job_id = %(job_id)s AND sheet_num = %(sheet_num)s AND version = %(version)s
RETURNING 1;

-- name: select_sheets
SELECT {sheets.columns} FROM sheets WHERE job_id = %(job_id)s ORDER BY sheet_num;

-- name: select_some_sheets
SELECT {sheets.columns} FROM sheets
WHERE job_id = %(job_id)s AND sheet_num = ANY(%(nums)s::integer[])
ORDER BY sheet_num;

-- name: select_sheet
SELECT {sheets.columns} FROM sheets WHERE job_id = %(job_id)s AND sheet_num = %(sheet_num)s;

-- name: select_sheets_page
SELECT {sheets.columns} FROM sheets
WHERE job_id = %(job_id)s
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
ORDER BY sheet_num LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_sheets_matching
SELECT count(*) FROM sheets
WHERE job_id = %(job_id)s
  AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]));

-- name: count_running_sheets
SELECT count(*) FROM sheets WHERE status = 'running';

-- name: insert_attempt
INSERT INTO attempts ({attempts.columns}) VALUES ({attempts.values})
ON CONFLICT (job_id, sheet_num, attempt) DO NOTHING RETURNING 1;

-- name: update_attempt
UPDATE attempts SET {attempts.assign}, version = version + 1
WHERE job_id = %(job_id)s AND sheet_num = %(sheet_num)s AND attempt = %(attempt)s
  AND version = %(version)s
RETURNING 1;

-- name: renew_leases
-- Only attempts still in flight and still ours: a reclaimed attempt is not renewed.
UPDATE attempts SET lease_expires_at = %(until)s, lease_renewed_at = %(renewed_at)s
WHERE conductor_id = %(conductor_id)s AND outcome IS NULL;

-- name: select_attempts
SELECT {attempts.columns} FROM attempts
WHERE job_id = %(job_id)s AND (%(sheet_num)s::integer IS NULL OR sheet_num = %(sheet_num)s)
ORDER BY sheet_num, attempt LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_attempts
SELECT count(*) FROM attempts
WHERE job_id = %(job_id)s AND (%(sheet_num)s::integer IS NULL OR sheet_num = %(sheet_num)s);

-- name: select_attempt
SELECT {attempts.columns} FROM attempts
WHERE job_id = %(job_id)s AND sheet_num = %(sheet_num)s AND attempt = %(attempt)s;

-- name: select_latest_attempt
SELECT {attempts.columns} FROM attempts
WHERE job_id = %(job_id)s AND sheet_num = %(sheet_num)s
ORDER BY attempt DESC LIMIT 1;

-- name: select_in_flight_attempts
-- Every attempt without an outcome, whatever its job's status: a conductor that died during a
-- cancel or a deadline stop had already marked the job terminal while its sheets still ran.
SELECT {attempts.columns} FROM attempts WHERE outcome IS NULL ORDER BY job_id, sheet_num;

-- name: insert_hold
INSERT INTO holds ({holds.columns}) VALUES ({holds.values})
ON CONFLICT (hold_key) DO NOTHING RETURNING 1;

-- name: update_hold
UPDATE holds SET {holds.assign}, version = version + 1
WHERE hold_key = %(hold_key)s AND version = %(version)s RETURNING 1;

-- name: delete_hold
DELETE FROM holds WHERE hold_key = %(hold_key)s AND version = %(version)s RETURNING 1;

-- name: select_holds
SELECT {holds.columns} FROM holds ORDER BY hold_key;

-- name: notify
-- Delivered to every listener when (and only if) the transaction commits.
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: upsert_conductor
INSERT INTO conductors ({conductors.columns}) VALUES ({conductors.values})
ON CONFLICT (conductor_id) DO UPDATE SET {conductors.assign};

-- name: select_conductors
SELECT {conductors.columns} FROM conductors ORDER BY conductor_id;

-- name: delete_conductor
DELETE FROM conductors WHERE conductor_id = %(conductor_id)s;

-- name: current_schema
SELECT current_schema();

-- name: select_pending_approvals
SELECT {sheets.columns} FROM sheets
WHERE status = 'waiting' AND waiting_reason = 'approval'
ORDER BY updated_at, job_id, sheet_num LIMIT %(limit)s;

-- name: count_pending_approvals
SELECT count(*) FROM sheets WHERE status = 'waiting' AND waiting_reason = 'approval';

-- name: insert_task
INSERT INTO tasks ({tasks.columns}) VALUES ({tasks.values})
ON CONFLICT (task_id) DO NOTHING RETURNING 1;

-- name: delete_task
DELETE FROM tasks WHERE task_id = %(task_id)s;

-- name: select_task
SELECT {tasks.columns} FROM tasks WHERE task_id = %(task_id)s;

-- name: select_expired_tasks
SELECT task_id FROM tasks WHERE expires_at <= %(now)s ORDER BY expires_at LIMIT %(limit)s;

-- name: select_next_task_expiry
SELECT min(expires_at) FROM tasks;

-- name: select_job_files
SELECT job_id, status, completed_at, snapshot_path FROM jobs;

-- name: select_jobs_with_pending_hooks
SELECT {jobs.columns} FROM jobs WHERE pending_hooks_json <> '[]' ORDER BY completed_at, job_id;

-- name: finish_task
-- The first final state stands: a task that has one keeps it.
UPDATE tasks SET final_status = %(final_status)s, final_message = %(final_message)s,
  final_at = %(final_at)s, final_error = %(final_error)s,
  final_job_failed = %(final_job_failed)s, final_detail_json = %(final_detail_json)s,
  version = version + 1
WHERE task_id = %(task_id)s AND final_status IS NULL;

-- name: select_open_tasks
SELECT {tasks.columns} FROM tasks
WHERE final_status IS NULL AND job_id = ANY(%(job_ids)s::text[])
ORDER BY task_id;
