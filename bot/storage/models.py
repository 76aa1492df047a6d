"""ORM models. The schema itself is owned by Alembic (``migrations/``); these must match it (a test checks)."""

from __future__ import annotations

from datetime import UTC, datetime, time
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
    SmallInteger,
    String,
    Text,
    Time,
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
    #: The reply's language as the model path saw it (ISO 639-1, ``en`` for English); empty for moderators.
    language: Mapped[str | None] = mapped_column(String(8), default=None)
    #: The encoder of the model that gave the stance (e.g. ``usem3`` for other languages); empty for moderators.
    encoder: Mapped[str | None] = mapped_column(String(40), default=None)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- digests and schedules ---------------------------------------------------------------------------------------

#: Digest queries walk the replies of a prompt in a guild written between two instants: this index finds them and
#: carries the columns they read (author, message, deleted), and the next one finds each reply's current stance,
#: so neither table is visited row by row.
Index(
    "ix_replies_prompt_guild_created",
    Reply.prompt_id,
    Reply.guild_id,
    Reply.created_at,
    Reply.author_id,
    Reply.message_id,
    Reply.deleted_at,
)
Index("ix_stances_reply_current", Stance.reply_id, Stance.is_current, Stance.label, Stance.counted)


class DigestSchedule(Base):
    """A digest of one prompt posted in a channel on a cadence (weekday + local time in ``timezone``).

    ``next_due_at`` (UTC) is when it fires next; the scheduler sleeps to the nearest one. One schedule per guild,
    prompt and period kind: scheduling again moves it.
    """

    __tablename__ = "digest_schedules"
    __table_args__ = (
        UniqueConstraint("guild_id", "prompt_id", "period_kind"),
        Index("ix_digest_schedules_due", "active", "next_due_at"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(Id, ForeignKey("prompts.id", ondelete="CASCADE"))
    channel_id: Mapped[int]
    weekday: Mapped[int | None] = mapped_column(SmallInteger, default=None)
    local_time: Mapped[time] = mapped_column(Time)
    period_kind: Mapped[str] = mapped_column(String(8), default="weekly")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_by: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    next_due_at: Mapped[datetime]


class DigestPost(Base):
    """One digest for one period: claimed (inserted) before posting, so a period is posted at most once.

    The unique key makes two processes racing for the same digest insert one row; the loser posts nothing.
    ``posted_at``/``message_id`` are set once Discord accepted the message; ``late`` when it went out after the
    period's end plus a grace time (the bot was down).
    """

    __tablename__ = "digest_posts"
    __table_args__ = (UniqueConstraint("prompt_id", "guild_id", "period_kind", "period_start"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    schedule_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("digest_schedules.id", ondelete="SET NULL"), default=None, index=True
    )
    prompt_id: Mapped[int] = mapped_column(Id, ForeignKey("prompts.id", ondelete="CASCADE"))
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    period_kind: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    channel_id: Mapped[int]
    claimed_by: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    posted_at: Mapped[datetime | None] = mapped_column(default=None)
    message_id: Mapped[int | None] = mapped_column(default=None)


class PromptSchedule(Base):
    """A prompt to be posted in a channel at a set time (once). ``status``: pending, posting, posted, failed,
    cancelled; ``pending → posting`` is a conditional update, so only one process posts it."""

    __tablename__ = "prompt_schedules"
    __table_args__ = (Index("ix_prompt_schedules_due", "status", "post_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(Id, ForeignKey("prompts.id", ondelete="CASCADE"))
    channel_id: Mapped[int]
    post_at: Mapped[datetime]
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_by: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_at: Mapped[datetime | None] = mapped_column(default=None)
    posted_at: Mapped[datetime | None] = mapped_column(default=None)
    message_id: Mapped[int | None] = mapped_column(default=None)
    thread_id: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(String(200), default=None)


# -- moderation and privacy --------------------------------------------------------------------------------------

#: Forget-me and /stance mydata find a member's replies in every guild and prompt by this index.
Index("ix_replies_author_id", Reply.author_id)


class DeclaredStance(Base):
    """A member's self-declared stance on a prompt in a guild (the buttons on the prompt message); one per member.

    ``counted`` marks it as what the tally counts for that member (when declared stances override the model);
    ``model_label`` is the stance the model's counting would give the same member (``None`` when they have no
    classified reply), kept on write so "declared vs model" is a plain ``GROUP BY`` too.
    """

    __tablename__ = "declared_stances"
    __table_args__ = (
        UniqueConstraint("prompt_id", "guild_id", "author_id"),
        Index("ix_declared_stances_tally", "prompt_id", "guild_id", "counted", "label"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(Id, ForeignKey("prompts.id", ondelete="CASCADE"))
    guild_id: Mapped[int]
    author_id: Mapped[int] = mapped_column(index=True)
    label: Mapped[str] = mapped_column(String(32))
    counted: Mapped[bool] = mapped_column(Boolean, default=False)
    model_label: Mapped[str | None] = mapped_column(String(32), default=None)
    declared_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who changed what, from what to what, and when: relabels, review decisions, prompt changes, forget-me.

    After a member asks to be forgotten their id (as subject or actor) and message ids are removed from these rows;
    an anonymous ``forget`` row keeps only how much was removed.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_guild_created", "guild_id", "created_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(default=None)
    action: Mapped[str] = mapped_column(String(24))
    prompt_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("prompts.id", ondelete="SET NULL"), default=None, index=True
    )
    reply_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("replies.id", ondelete="SET NULL"), default=None, index=True
    )
    message_id: Mapped[int | None] = mapped_column(default=None)
    channel_id: Mapped[int | None] = mapped_column(default=None)
    subject_id: Mapped[int | None] = mapped_column(default=None, index=True)
    actor_id: Mapped[int | None] = mapped_column(default=None, index=True)
    from_label: Mapped[str | None] = mapped_column(String(32), default=None)
    to_label: Mapped[str | None] = mapped_column(String(32), default=None)
    detail: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReviewItem(Base):
    """A reply the model was unsure about, waiting for a moderator's label (``status``: open, done, skipped,
    closed). ``channel_id``/``message_id`` locate its message in the moderators' review channel, if posted."""

    __tablename__ = "review_items"
    __table_args__ = (Index("ix_review_items_queue", "guild_id", "status", "created_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    reply_id: Mapped[int] = mapped_column(Id, ForeignKey("replies.id", ondelete="CASCADE"), unique=True)
    prompt_id: Mapped[int] = mapped_column(Id, ForeignKey("prompts.id", ondelete="CASCADE"))
    guild_id: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="open")
    model_label: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    channel_id: Mapped[int | None] = mapped_column(default=None)
    message_id: Mapped[int | None] = mapped_column(default=None)
    resolved_by: Mapped[int | None] = mapped_column(default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OptOut(Base):
    """A member who asked not to be counted in a guild (their new replies are not stored)."""

    __tablename__ = "opt_outs"
    guild_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GuildSettings(Base):
    """Per-guild moderation settings: the mod-log channel and the moderators' review channel."""

    __tablename__ = "guild_settings"
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True)
    mod_log_channel_id: Mapped[int | None] = mapped_column(default=None)
    review_channel_id: Mapped[int | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- learning from the server ------------------------------------------------------------------------------------


class PromptHeadRow(Base):
    """A head trained for one prompt in one guild from the server's labels (:mod:`bot.core.adapt`), kept whether
    it serves or not: ``active`` marks the one serving (at most one per guild and prompt); ``head`` is its JSON,
    ``figures`` what the comparison measured, ``base_version`` the model it sits on (it serves only on that one)."""

    __tablename__ = "prompt_heads"
    __table_args__ = (Index("ix_prompt_heads_prompt", "guild_id", "prompt_id", "trained_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    prompt_id: Mapped[int] = mapped_column(Id, ForeignKey("prompts.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(120))
    base_version: Mapped[str] = mapped_column(String(120))
    n_labels: Mapped[int] = mapped_column(Integer)
    head: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    trained_at: Mapped[datetime] = mapped_column(default=utcnow)
