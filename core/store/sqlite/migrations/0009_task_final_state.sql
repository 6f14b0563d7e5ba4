-- A durable task's final state, written once: the first time the task is seen ended (or,
-- at the latest, before its job is resumed or cleared). The tasks extension makes terminal
-- statuses final, so from then on the task is read from these columns, never again derived
-- from its job (which a resume can start again and a clear can delete). NULL final_status:
-- the task has not been seen ended; rows of earlier versions start that way.
ALTER TABLE tasks ADD COLUMN final_status TEXT;
ALTER TABLE tasks ADD COLUMN final_message TEXT;
ALTER TABLE tasks ADD COLUMN final_at TEXT;
ALTER TABLE tasks ADD COLUMN final_error TEXT;
ALTER TABLE tasks ADD COLUMN final_job_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN final_detail_json TEXT;
-- Before a resume or a clear, the tasks of those jobs not yet final are looked up.
CREATE INDEX tasks_open_by_job ON tasks (job_id) WHERE final_status IS NULL;
