"""alarm journal: every occurrence of each alarm (raised, acknowledged, returned, cleared,
shelved, unshelved, suppressed), with who and a note (the lead renumbers on merge)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarms.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alarm_events_alarm", "alarm_events", ["alarm_id", "id"])
    op.create_index("ix_alarm_events_ts", "alarm_events", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_alarm_events_ts", table_name="alarm_events")
    op.drop_index("ix_alarm_events_alarm", table_name="alarm_events")
    op.drop_table("alarm_events")
