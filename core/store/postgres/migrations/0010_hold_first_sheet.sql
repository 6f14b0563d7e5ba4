-- The attempt that goes first once a hold's wait is over, claimed in the commit that starts
-- it, so conductors sharing the store send one sheet between them, not one each. NULL: none
-- has gone yet (or the hold is still waiting).
ALTER TABLE holds ADD COLUMN first_job_id TEXT;
ALTER TABLE holds ADD COLUMN first_sheet_num INTEGER;
ALTER TABLE holds ADD COLUMN first_attempt INTEGER;
