"""The SQL storage backend (SQLite by default, PostgreSQL by URL)."""
