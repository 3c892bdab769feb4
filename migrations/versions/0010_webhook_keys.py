"""one run per webhook delivery key

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_unique_constraint(
        "uq_workflow_runs_workflow_id_idempotency_key",
        "workflow_runs",
        ["workflow_id", "idempotency_key"],
    )


def downgrade() -> None:
    op.drop_constraint(
        "uq_workflow_runs_workflow_id_idempotency_key", "workflow_runs", type_="unique"
    )
    op.drop_column("workflow_runs", "idempotency_key")
