-- What became of a job's `on_success` follow-up (submitted, refused, deferred, chain_ended;
-- with the child's job id or why not, the spec path and when), as JSON: the parent shows
-- it. NULL: the job has no follow-up, or it was not tried yet.
ALTER TABLE jobs ADD COLUMN follow_up_json TEXT;
