"""sdk_links: pages and login users the SDK collectors link events to, shared by nodes

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sdk_links",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ai", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("link_key", sa.String(length=32), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("visitor", sa.String(length=64), nullable=True),
        sa.Column("session", sa.String(length=50), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sdk_links", schema=None) as batch_op:
        batch_op.create_index("ix_sdk_links_key", ["ai", "kind", "link_key", "at"], unique=False)
        batch_op.create_index("ix_sdk_links_created", ["created_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sdk_links", schema=None) as batch_op:
        batch_op.drop_index("ix_sdk_links_created")
        batch_op.drop_index("ix_sdk_links_key")
    op.drop_table("sdk_links")
