-- The instrument each attempt ran with, and what AI CLIs report about it: the session it ran
-- in (a retry resumes it, after a restart too) and its cost and tokens; and the job's totals,
-- summed by the writer with each attempt's result so `status` never adds up the history.
ALTER TABLE attempts ADD COLUMN instrument TEXT;
ALTER TABLE attempts ADD COLUMN session_id TEXT;
ALTER TABLE attempts ADD COLUMN resumed_session_id TEXT;
ALTER TABLE attempts ADD COLUMN cost_usd DOUBLE PRECISION;
ALTER TABLE attempts ADD COLUMN input_tokens BIGINT;
ALTER TABLE attempts ADD COLUMN output_tokens BIGINT;
ALTER TABLE attempts ADD COLUMN cache_read_tokens BIGINT;
ALTER TABLE attempts ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE jobs ADD COLUMN cost_usd DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN input_tokens BIGINT;
ALTER TABLE jobs ADD COLUMN output_tokens BIGINT;
ALTER TABLE jobs ADD COLUMN cache_read_tokens BIGINT;
ALTER TABLE jobs ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE jobs ADD COLUMN cost_limit_usd DOUBLE PRECISION;
