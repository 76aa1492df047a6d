"""stance language and encoder

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 18:40:00

Which path read a reply: its language (ISO 639-1, ``en`` for English) and the encoder of the model that gave the
stance (``usem3`` for the multilingual heads). Both are empty for moderators' stances and for stances stored before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("stances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("encoder", sa.String(length=40), nullable=True))


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("stances", schema=None) as batch_op:
        batch_op.drop_column("encoder")
        batch_op.drop_column("language")
