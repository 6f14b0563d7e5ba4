-- Several conductors on one store: each records itself here and renews the row with its
-- heartbeat; one whose row has expired is gone (its attempts' leases lapse with it).
CREATE TABLE conductors (
    conductor_id TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    labels_json  TEXT NOT NULL DEFAULT '[]'
);
-- Reclaiming looks for lapsed leases of attempts still in flight.
CREATE INDEX attempts_in_flight_by_lease ON attempts (lease_expires_at) WHERE outcome IS NULL;
