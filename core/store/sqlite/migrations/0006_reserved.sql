-- Reserved for a migration of another branch (numbers 0004-0006 were handed out
-- together); it changes nothing. When that migration lands, it replaces this file.
SELECT 1;
