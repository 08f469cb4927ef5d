"""Alembic migrations of the SQL schema, run programmatically at startup."""
