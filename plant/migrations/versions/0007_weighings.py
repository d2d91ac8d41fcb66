"""weighings: weighbridge records of the mechanical stage's output fractions (the lead
renumbers on merge)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "weighings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.String(length=32), nullable=False),
        sa.Column("kg", sa.Float(), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=True),
        sa.Column("weighed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["lot_id"], ["lots.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_weighings_lot", "weighings", ["lot_id"])
    op.create_index("ix_weighings_at", "weighings", ["weighed_at"])


def downgrade() -> None:
    op.drop_index("ix_weighings_at", table_name="weighings")
    op.drop_index("ix_weighings_lot", table_name="weighings")
    op.drop_table("weighings")
