"""PLC epochs: a cell is (line, PLC epoch, sequence number), never the number alone

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 13:20:00
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
        "plc_epochs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("line", sa.String(length=32), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("plc_epoch", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("line", "epoch", name="uq_plc_epochs_line_epoch"),
    )
    with op.batch_alter_table("cells") as batch:
        batch.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="1"))
        batch.drop_constraint("uq_cells_line_seq", type_="unique")
        batch.create_unique_constraint("uq_cells_line_epoch_seq", ["line", "epoch", "seq"])
    # Cells recorded before epochs existed belong to epoch 1 of their line.
    op.execute(
        "INSERT INTO plc_epochs (line, epoch, plc_epoch, reason, started_at) "
        "SELECT line, 1, NULL, 'cells recorded before PLC epochs were kept', MIN(created_at) "
        "FROM cells GROUP BY line"
    )


def downgrade() -> None:
    with op.batch_alter_table("cells") as batch:
        batch.drop_constraint("uq_cells_line_epoch_seq", type_="unique")
        batch.create_unique_constraint("uq_cells_line_seq", ["line", "seq"])
        batch.drop_column("epoch")
    op.drop_table("plc_epochs")
