-- Reserved, as in the SQLite store (numbers 0004-0006 were handed out together); it
-- changes nothing.
SELECT 1;
