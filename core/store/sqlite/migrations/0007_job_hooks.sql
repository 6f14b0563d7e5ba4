-- What a job still has to do now that it ended (notify, submit its follow-up): written with
-- the transition that ended it, cleared as each is done, so a crash between the two loses
-- nothing. And where a chained job came from, and how deep in its chain it is.
ALTER TABLE jobs ADD COLUMN pending_hooks_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN chained_from TEXT;
ALTER TABLE jobs ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_with_pending_hooks ON jobs (job_id) WHERE pending_hooks_json <> '[]';
