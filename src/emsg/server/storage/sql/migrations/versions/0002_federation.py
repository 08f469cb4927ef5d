"""Federation: the outbound queue, destinations' retry state, the inbound ledger,
nonces of signed requests and the cache of remote server keys.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_POS = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "fed_outbox",
        sa.Column("id", _POS, primary_key=True, autoincrement=True),
        sa.Column("destination", sa.String(260), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(320), nullable=False),
        sa.Column("sender_device", sa.String(64)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_fed_outbox_dest_id", "fed_outbox", ["destination", "id"])
    op.create_table(
        "fed_destinations",
        sa.Column("destination", sa.String(260), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("retry_at", sa.BigInteger, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "fed_txns",
        sa.Column("origin", sa.String(260), primary_key=True),
        sa.Column("txn_id", sa.String(128), primary_key=True),
        sa.Column("body_hash", sa.String(64), nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_fed_txns_created", "fed_txns", ["created_at"])
    op.create_table(
        "fed_received",
        sa.Column("origin", sa.String(260), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_fed_received_created", "fed_received", ["created_at"])
    op.create_table(
        "fed_nonces",
        sa.Column("nonce", sa.String(400), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_fed_nonces_created", "fed_nonces", ["created_at"])
    op.create_table(
        "fed_server_keys",
        sa.Column("domain", sa.String(260), primary_key=True),
        sa.Column("key_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("valid_until", sa.BigInteger, nullable=False),
        sa.Column("expired_at", sa.BigInteger),
        sa.Column("fetched_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for name in ("fed_server_keys", "fed_nonces", "fed_received", "fed_txns",
                 "fed_destinations", "fed_outbox"):  # fmt: skip
        op.drop_table(name)
