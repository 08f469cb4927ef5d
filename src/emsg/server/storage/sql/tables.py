"""The schema, as SQLAlchemy Core tables (the migrations create the same)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
Pos = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "accounts",
    metadata,
    Column("address", String(320), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("policy", String(16), nullable=False),
    Column("identity_key", String(64)),
    Column("device_list", Text),
    Column("device_list_version", BigInteger, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("address", String(320), ForeignKey("accounts.address"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("revoked", Boolean, nullable=False, server_default=false()),
    Column("device_keys", Text),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_devices_address", "address"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_tokens_device", "device_id"),
)

one_time_keys = Table(
    "one_time_keys",
    metadata,
    Column("id", Pos, primary_key=True, autoincrement=True),
    Column("device_id", String(64), ForeignKey("devices.device_id"), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Index("ux_otk_device_key", "device_id", "key_id", unique=True),
)

fallback_keys = Table(
    "fallback_keys",
    metadata,
    Column("device_id", String(64), ForeignKey("devices.device_id"), primary_key=True),
    Column("body", Text, nullable=False),
)

contacts = Table(
    "contacts",
    metadata,
    Column("owner", String(320), ForeignKey("accounts.address"), primary_key=True),
    # Text, not a foreign key: remote peers will live here once federation exists.
    Column("peer", String(320), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("identity_key", String(64)),
    Column("since", BigInteger, nullable=False),
    Index("ix_contacts_peer", "peer"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("owner", String(320), ForeignKey("accounts.address"), primary_key=True),
    Column("peer", String(320), primary_key=True),
    Column("since", BigInteger, nullable=False),
    Index("ix_blocks_peer", "peer"),
)

events = Table(
    "events",
    metadata,
    Column("pos", Pos, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_events_device_pos", "device_id", "pos"),
    # Positions must never be reused after acknowledged rows are deleted, or a
    # client whose cursor passed a position would skip the new event that reuses it.
    sqlite_autoincrement=True,
)

held = Table(
    "held_envelopes",
    metadata,
    Column("id", Pos, primary_key=True, autoincrement=True),
    Column("recipient", String(320), nullable=False),
    Column("sender", String(320), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_held_recipient_sender", "recipient", "sender", "id"),
    sqlite_autoincrement=True,  # release order is id order; never reuse one
)

identity_backups = Table(
    "identity_backups",
    metadata,
    Column("address", String(320), ForeignKey("accounts.address"), primary_key=True),
    # The sealed backup as the client sent it (JSON); the server cannot open it.
    Column("body", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

transactions = Table(
    "transactions",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("txn_id", String(128), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_transactions_created", "created_at"),
)
