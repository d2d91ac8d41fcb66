"""historian: a line column in process_values and process_rollups, so two lines on one database
keep their own samples and roll-ups; hydromet_campaigns.tank_g, what the hold-up tank holds
after a campaign

Samples and roll-ups recorded before this revision belonged to the only line there was: they
become line L1's.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = "n, vmin, vmax, vsum, vsumsq"


def _rollups(name: str, *, line: bool) -> None:
    key = ["line", "tag", "res_s", "bucket"] if line else ["tag", "res_s", "bucket"]
    op.create_table(
        name,
        *([sa.Column("line", sa.String(length=32), nullable=False)] if line else []),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("res_s", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=False),
        sa.Column("vmax", sa.Float(), nullable=False),
        sa.Column("vsum", sa.Float(), nullable=False),
        sa.Column("vsumsq", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{name}"),
    )


def upgrade() -> None:
    with op.batch_alter_table("process_values") as batch:
        batch.add_column(
            sa.Column("line", sa.String(length=32), nullable=False, server_default="L1")
        )
        batch.drop_index("ix_process_values_tag_ts")
        batch.create_index("ix_process_values_line_tag_ts", ["line", "tag", "ts"])
    with op.batch_alter_table("process_values") as batch:
        batch.alter_column("line", server_default=None)
    _rollups("process_rollups_by_line", line=True)
    op.execute(
        "INSERT INTO process_rollups_by_line (line, tag, res_s, bucket, "
        f"{COLUMNS}) SELECT 'L1', tag, res_s, bucket, {COLUMNS} FROM process_rollups"
    )
    op.drop_table("process_rollups")
    op.rename_table("process_rollups_by_line", "process_rollups")
    with op.batch_alter_table("hydromet_campaigns") as batch:
        batch.add_column(sa.Column("tank_g", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hydromet_campaigns") as batch:
        batch.drop_column("tank_g")
    _rollups("process_rollups_one_line", line=False)
    op.execute(
        f"INSERT INTO process_rollups_one_line (tag, res_s, bucket, {COLUMNS}) "
        f"SELECT tag, res_s, bucket, {COLUMNS} FROM process_rollups WHERE line = 'L1'"
    )
    op.drop_table("process_rollups")
    op.rename_table("process_rollups_one_line", "process_rollups")
    op.execute("DELETE FROM process_values WHERE line <> 'L1'")
    with op.batch_alter_table("process_values") as batch:
        batch.drop_index("ix_process_values_line_tag_ts")
        batch.create_index("ix_process_values_tag_ts", ["tag", "ts"])
        batch.drop_column("line")
