-- The instrument each attempt ran on: a sheet with fallbacks may move to another instrument,
-- and its history shows where every attempt ran.
ALTER TABLE attempts ADD COLUMN instrument TEXT;
