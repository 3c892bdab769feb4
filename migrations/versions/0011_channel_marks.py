"""what channels remember about their platforms (placeholders, posted parts, threads)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_marks",
        sa.Column("channel", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False, server_default=""),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_channel_marks_expires_at", "channel_marks", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_channel_marks_expires_at", table_name="channel_marks")
    op.drop_table("channel_marks")
