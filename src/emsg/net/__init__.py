"""Asyncio networking shared by the client and the server (and nothing of either).

Both the client library and the homeserver may import this package; it imports
neither of them, nor `crypto`, `cli` or `testing` (an import-linter contract)."""
