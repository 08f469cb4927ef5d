"""The initial schema.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_POS = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("address", sa.String(320), primary_key=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("identity_key", sa.String(64)),
        sa.Column("device_list", sa.Text),
        sa.Column("device_list_version", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(320), sa.ForeignKey("accounts.address"), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("device_keys", sa.Text),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_devices_address", "devices", ["address"])
    op.create_table(
        "tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tokens_device", "tokens", ["device_id"])
    op.create_table(
        "one_time_keys",
        sa.Column("id", _POS, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.device_id"), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ux_otk_device_key", "one_time_keys", ["device_id", "key_id"], unique=True)
    op.create_table(
        "fallback_keys",
        sa.Column("device_id", sa.String(64), sa.ForeignKey("devices.device_id"), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "contacts",
        sa.Column("owner", sa.String(320), sa.ForeignKey("accounts.address"), primary_key=True),
        sa.Column("peer", sa.String(320), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("identity_key", sa.String(64)),
        sa.Column("since", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_contacts_peer", "contacts", ["peer"])
    op.create_table(
        "blocks",
        sa.Column("owner", sa.String(320), sa.ForeignKey("accounts.address"), primary_key=True),
        sa.Column("peer", sa.String(320), primary_key=True),
        sa.Column("since", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_blocks_peer", "blocks", ["peer"])
    op.create_table(
        "events",
        sa.Column("pos", _POS, primary_key=True, autoincrement=True),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        # Never reuse a position after acknowledged rows are deleted (see tables.py).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_events_device_pos", "events", ["device_id", "pos"])
    op.create_table(
        "held_envelopes",
        sa.Column("id", _POS, primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_held_recipient_sender", "held_envelopes", ["recipient", "sender", "id"])
    op.create_table(
        "transactions",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("txn_id", sa.String(128), primary_key=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_transactions_created", "transactions", ["created_at"])


def downgrade() -> None:
    for name in (
        "transactions", "held_envelopes", "events", "blocks", "contacts",
        "fallback_keys", "one_time_keys", "tokens", "devices", "accounts",
    ):  # fmt: skip
        op.drop_table(name)
