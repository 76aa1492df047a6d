"""prompt heads: per guild and prompt, the heads learned from the server's labels

Revision ID: 0005_prompt_heads
Revises: 0004
Create Date: 2026-12-07 19:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_prompt_heads"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "prompt_heads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("prompt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.String(length=120), nullable=False),
        sa.Column("base_version", sa.String(length=120), nullable=False),
        sa.Column("n_labels", sa.Integer(), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["guild_id"], ["guilds.id"], name=op.f("fk_prompt_heads_guild_id_guilds"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_prompt_heads_prompt_id_prompts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_heads")),
    )
    with op.batch_alter_table("prompt_heads", schema=None) as batch_op:
        batch_op.create_index("ix_prompt_heads_prompt", ["guild_id", "prompt_id", "trained_at"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("prompt_heads", schema=None) as batch_op:
        batch_op.drop_index("ix_prompt_heads_prompt")
    op.drop_table("prompt_heads")
