"""passport trust: each passport's status, expiry date and why its values are implausible

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("passports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("expires_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("implausible", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("passports", schema=None) as batch_op:
        batch_op.drop_column("implausible")
        batch_op.drop_column("expires_on")
        batch_op.drop_column("status")
