"""audit events: status and idempotency key (tool calls)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "audit_events",
        sa.Column("status", sa.String(length=16), server_default="ok", nullable=False),
    )
    op.add_column("audit_events", sa.Column("key", sa.String(length=200), nullable=True))
    op.create_index(op.f("ix_audit_events_key"), "audit_events", ["key"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events_key"), table_name="audit_events")
    op.drop_column("audit_events", "key")
    op.drop_column("audit_events", "status")
