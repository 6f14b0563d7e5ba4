"""The embedded SQLite store (the default `store_url`)."""
