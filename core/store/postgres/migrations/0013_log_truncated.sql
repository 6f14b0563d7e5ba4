-- Whether an attempt's log reached log_max_bytes and its later output was discarded: the
-- history says so, and diagnose need not find the marker in a log it may not be able to
-- read (another host's, or one since cleared). Rows of earlier versions read false.
ALTER TABLE attempts ADD COLUMN log_truncated BOOLEAN NOT NULL DEFAULT false;
