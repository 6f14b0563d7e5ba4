"""The PostgreSQL store: one set of jobs shared by conductors on several hosts."""
