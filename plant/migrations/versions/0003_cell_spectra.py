"""cell spectra: each measured cell's XRF spectrum kept with the cell

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cell_spectra",
        sa.Column("cell_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("kev_per_channel", sa.Float(), nullable=False),
        sa.Column("offset_kev", sa.Float(), nullable=False),
        sa.Column("live_time_s", sa.Float(), nullable=False),
        sa.Column("real_time_s", sa.Float(), nullable=True),
        sa.Column("tube_kv", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=300), nullable=False),
        sa.Column("instrument", sa.String(length=200), nullable=True),
        sa.Column("encoding", sa.String(length=32), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cell_id"], ["cells.id"]),
        sa.PrimaryKeyConstraint("cell_id"),
    )
    with op.batch_alter_table("cell_spectra", schema=None) as batch_op:
        batch_op.create_index("ix_cell_spectra_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cell_spectra", schema=None) as batch_op:
        batch_op.drop_index("ix_cell_spectra_created_at")
    op.drop_table("cell_spectra")
