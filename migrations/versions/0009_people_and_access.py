"""people: approval, pairing codes, prompt actions per person, the terminal user as owner

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
    # Whoever typed in the machine's own terminal runs this installation: they own it.
    op.execute(
        "UPDATE users SET role = 'owner' WHERE id IN "
        "(SELECT user_id FROM channel_accounts WHERE channel = 'terminal')"
    )
    _prompt_actions_per_person()
    op.create_table(
        "pairing_codes",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("identity", sa.String(length=300), nullable=False),
        sa.Column("conversation_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replied_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_pairing_codes_conversation_id_conversations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_pairing_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_pairing_codes")),
        sa.UniqueConstraint("code", name=op.f("uq_pairing_codes_code")),
    )
    op.create_index("ix_pairing_codes_replied_at", "pairing_codes", ["replied_at"])


def _prompt_actions_per_person() -> None:
    # Actions saved so far were everyone's: they stay shared (owner_id NULL).
    op.add_column("prompt_actions", sa.Column("owner_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_prompt_actions_owner_id_users"),
        "prompt_actions",
        "users",
        ["owner_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.drop_constraint("uq_prompt_actions_name", "prompt_actions", type_="unique")
    op.create_unique_constraint(
        op.f("uq_prompt_actions_name_owner_id"),
        "prompt_actions",
        ["name", "owner_id"],
        postgresql_nulls_not_distinct=True,
    )
    op.add_column("prompt_action_runs", sa.Column("user_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_prompt_action_runs_user_id_users"),
        "prompt_action_runs",
        "users",
        ["user_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    op.drop_table("pairing_codes")
    op.drop_constraint(
        op.f("fk_prompt_action_runs_user_id_users"), "prompt_action_runs", type_="foreignkey"
    )
    op.drop_column("prompt_action_runs", "user_id")
    op.drop_constraint(op.f("uq_prompt_actions_name_owner_id"), "prompt_actions", type_="unique")
    # Back to one action per name: the shared one, else the oldest, is kept.
    op.execute(
        "DELETE FROM prompt_actions a USING prompt_actions b "
        "WHERE a.name = b.name AND a.owner_id IS NOT NULL "
        "AND (b.owner_id IS NULL OR b.id < a.id)"
    )
    op.create_unique_constraint(op.f("uq_prompt_actions_name"), "prompt_actions", ["name"])
    op.drop_constraint(
        op.f("fk_prompt_actions_owner_id_users"), "prompt_actions", type_="foreignkey"
    )
    op.drop_column("prompt_actions", "owner_id")
    op.drop_column("users", "approved_at")
