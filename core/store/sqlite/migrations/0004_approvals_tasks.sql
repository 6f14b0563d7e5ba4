-- Approval sheets: the attempt of an approval sheet records the decision, who made it and
-- their note. A pending approval is its sheet row (waiting, waiting_reason 'approval'), so it
-- survives any restart; this index finds them without scanning every sheet.
ALTER TABLE attempts ADD COLUMN decision TEXT;
ALTER TABLE attempts ADD COLUMN decided_by TEXT;
ALTER TABLE attempts ADD COLUMN note TEXT;
CREATE INDEX sheets_awaiting_approval ON sheets (job_id, sheet_num)
WHERE status = 'waiting' AND waiting_reason = 'approval';
