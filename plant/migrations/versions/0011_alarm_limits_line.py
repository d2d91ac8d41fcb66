"""alarm_limits: a line column, so each line on one database has its own analog limits

A limit set before this revision acted on every line: it becomes a limit of line "*" (every line
without a limit of its own for that tag and kind).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarm_limits") as batch:
        batch.add_column(
            sa.Column("line", sa.String(length=32), nullable=False, server_default="*")
        )
        batch.drop_constraint("uq_alarm_limits_tag_kind", type_="unique")
        batch.create_unique_constraint("uq_alarm_limits_line_tag_kind", ["line", "tag", "kind"])
    with op.batch_alter_table("alarm_limits") as batch:
        batch.alter_column("line", server_default=None)


def downgrade() -> None:
    op.execute("DELETE FROM alarm_limits WHERE line <> '*'")
    with op.batch_alter_table("alarm_limits") as batch:
        batch.drop_constraint("uq_alarm_limits_line_tag_kind", type_="unique")
        batch.create_unique_constraint("uq_alarm_limits_tag_kind", ["tag", "kind"])
        batch.drop_column("line")
