"""Storage ports (Protocols and records) and their implementations."""
