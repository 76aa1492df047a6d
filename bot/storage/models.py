"""ORM models. The schema itself is owned by Alembic (``migrations/``); these must match it (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Surrogate keys: BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base with named constraints (so Alembic batch migrations work on SQLite)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        int: BigInteger,
        dict[str, Any]: JSON,
    }


class Guild(Base):
    """A Discord server the bot is in."""

    __tablename__ = "guilds"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptRow(Base):
    """A prompt definition (seed prompts from files, or added by moderators); labels stored as JSON."""

    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("guild_id", "slug"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(32))
    guild_id: Mapped[int | None] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"), default=None)
    title: Mapped[str] = mapped_column(String(100))
    question: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(300), default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PromptPost(Base):
    """A prompt posted in a channel, with the thread where replies are read."""

    __tablename__ = "prompt_posts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    channel_id: Mapped[int]
    message_id: Mapped[int] = mapped_column(unique=True)
    thread_id: Mapped[int] = mapped_column(unique=True)
    posted_by: Mapped[int | None] = mapped_column(default=None)
    posted_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(default=None)


class Reply(Base):
    """A member's message in a prompt thread. Stored once per Discord message id."""

    __tablename__ = "replies"
    __table_args__ = (Index("ix_replies_prompt_guild_author", "prompt_id", "guild_id", "author_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    message_id: Mapped[int] = mapped_column(unique=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("prompt_posts.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    guild_id: Mapped[int]
    channel_id: Mapped[int]
    author_id: Mapped[int]
    content: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    edited_at: Mapped[datetime | None] = mapped_column(default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)


class Stance(Base):
    """A stance given to a reply (by the model or a moderator). History is kept; one is current per reply.

    ``counted`` marks the stances the tally counts (one per member per prompt by default), maintained on every
    write so that tallies and digests are a plain ``GROUP BY``.
    """

    __tablename__ = "stances"
    __table_args__ = (
        Index("ix_stances_tally", "prompt_id", "guild_id", "counted", "label"),
        Index("ix_stances_member", "prompt_id", "guild_id", "author_id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    reply_id: Mapped[int] = mapped_column(ForeignKey("replies.id", ondelete="CASCADE"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    guild_id: Mapped[int]
    author_id: Mapped[int]
    label: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(120))
    reason: Mapped[str | None] = mapped_column(String(200), default=None)
    source: Mapped[str] = mapped_column(String(16), default="model")
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
