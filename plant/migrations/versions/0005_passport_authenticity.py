"""passport authenticity: each passport's verdict, why, its signed credential and its expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("passports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("authenticity", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("authenticity_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("credential", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("credential_valid_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("passports", schema=None) as batch_op:
        batch_op.drop_column("credential_valid_until")
        batch_op.drop_column("credential")
        batch_op.drop_column("authenticity_reason")
        batch_op.drop_column("authenticity")
