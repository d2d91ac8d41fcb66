"""passports: index on lower(id), so the line's case-insensitive UUID lookup of a passport that
is not imported is an index probe, not a scan of every passport (`plant bench store`: 600 ms
at 450,000 passports on PostgreSQL; the lead renumbers on merge)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 21:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_passports_id_lower", "passports", [sa.text("lower(id)")])


def downgrade() -> None:
    op.drop_index("ix_passports_id_lower", table_name="passports")
