-- When the owner last renewed an in-flight attempt's lease: the last moment it is known to
-- have been running. An attempt taken back after its conductor died (kill -9, a lost host)
-- ends then, not when someone noticed. NULL: never renewed (it ends at its start).
ALTER TABLE attempts ADD COLUMN lease_renewed_at TIMESTAMPTZ;
