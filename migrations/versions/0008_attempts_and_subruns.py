"""attempts per message (poison messages are set aside); sub-workflow runs know their parent

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "messages", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_index(
        "ix_messages_failed",
        "messages",
        ["id"],
        postgresql_where=sa.text("direction = 'in' AND status = 'failed'"),
    )
    op.add_column("workflow_runs", sa.Column("parent_run_id", sa.BigInteger(), nullable=True))
    op.add_column("workflow_runs", sa.Column("parent_node", sa.String(length=128), nullable=True))
    op.add_column(
        "workflow_runs", sa.Column("depth", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_foreign_key(
        op.f("fk_workflow_runs_parent_run_id_workflow_runs"),
        "workflow_runs",
        "workflow_runs",
        ["parent_run_id"],
        ["id"],
        ondelete="CASCADE",
    )
    # One child run per parent node: a node started again after a crash finds its child.
    op.create_unique_constraint(
        op.f("uq_workflow_runs_parent_run_id_parent_node"),
        "workflow_runs",
        ["parent_run_id", "parent_node"],
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("uq_workflow_runs_parent_run_id_parent_node"), "workflow_runs", type_="unique"
    )
    op.drop_constraint(
        op.f("fk_workflow_runs_parent_run_id_workflow_runs"), "workflow_runs", type_="foreignkey"
    )
    op.drop_column("workflow_runs", "depth")
    op.drop_column("workflow_runs", "parent_node")
    op.drop_column("workflow_runs", "parent_run_id")
    op.drop_index("ix_messages_failed", table_name="messages")
    op.drop_column("messages", "attempts")
