"""The one place that reads and writes the database. Returns plain dataclasses, never ORM objects."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.errors import StorageError
from bot.core.prompts import UNCLEAR, Prompt, prompt_from_dict
from bot.core.stance import StanceResult
from bot.core.tally import Tally
from bot.storage.models import Guild, PromptPost, PromptRow, Reply, Stance, utcnow

log = logging.getLogger(__name__)

CountMode = Literal["member", "reply"]


@dataclass(frozen=True)
class PostInfo:
    """A posted prompt thread."""

    id: int
    prompt_row_id: int
    prompt_slug: str
    guild_id: int
    channel_id: int
    message_id: int
    thread_id: int
    closed: bool


@dataclass(frozen=True)
class ReplyRef:
    """A stored reply, enough to classify it."""

    id: int
    message_id: int
    prompt_slug: str
    guild_id: int
    author_id: int
    content: str


@dataclass(frozen=True)
class StoredStance:
    """A reply's current stance as stored."""

    message_id: int
    label: str
    confidence: float
    model_version: str
    reason: str | None
    source: str
    counted: bool


class Repository:
    """Async storage API over one sessionmaker. Every method is one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, count_mode: CountMode = "member") -> None:
        self.sessions = sessions
        self.count_mode = count_mode

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.sessions() as session, session.begin():
                yield session
        except (OperationalError, DBAPIError, OSError) as exc:
            log.error("Database error: %s", exc.__class__.__name__)
            raise StorageError("The database is unavailable right now; nothing was lost, try again shortly.") from exc

    def _insert(self, session: AsyncSession, table: type) -> postgresql.Insert | sqlite.Insert:
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)

    # -- guilds and prompts -------------------------------------------------------------------------------------

    async def ensure_guild(self, guild_id: int, name: str = "") -> None:
        """Create the guild row if missing; keep its name current."""
        async with self._tx() as s:
            stmt = self._insert(s, Guild).values(id=guild_id, name=name[:100], created_at=utcnow())
            await s.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"name": name[:100]}))

    async def sync_prompt(self, prompt: Prompt, guild_id: int | None = None) -> int:
        """Insert or update a prompt definition; returns its row id."""
        async with self._tx() as s:
            row = await s.scalar(
                select(PromptRow).where(
                    PromptRow.slug == prompt.id,
                    PromptRow.guild_id.is_(None) if guild_id is None else PromptRow.guild_id == guild_id,
                )
            )
            if row is None:
                row = PromptRow(slug=prompt.id, guild_id=guild_id, status="open")
                s.add(row)
            row.title, row.question, row.summary = prompt.title, prompt.question, prompt.summary
            row.source, row.definition = prompt.source, prompt.to_dict()
            await s.flush()
            return row.id

    async def guild_prompts(self, guild_id: int) -> list[tuple[Prompt, str]]:
        """Prompts a guild can use (global and its own), with their status (``open``/``closed``)."""
        async with self._tx() as s:
            rows = await s.scalars(
                select(PromptRow)
                .where((PromptRow.guild_id.is_(None)) | (PromptRow.guild_id == guild_id))
                .order_by(PromptRow.slug)
            )
            return [(prompt_from_dict(r.definition), r.status) for r in rows]

    async def _prompt_row(self, s: AsyncSession, slug: str, guild_id: int) -> PromptRow | None:
        own = await s.scalar(select(PromptRow).where(PromptRow.slug == slug, PromptRow.guild_id == guild_id))
        if own is not None:
            return own
        return await s.scalar(select(PromptRow).where(PromptRow.slug == slug, PromptRow.guild_id.is_(None)))

    # -- posts --------------------------------------------------------------------------------------------------

    async def record_post(
        self,
        prompt_slug: str,
        *,
        guild_id: int,
        channel_id: int,
        message_id: int,
        thread_id: int,
        posted_by: int | None,
    ) -> PostInfo:
        """Remember that a prompt was posted and where its thread is."""
        async with self._tx() as s:
            prow = await self._prompt_row(s, prompt_slug, guild_id)
            if prow is None:
                raise StorageError(f"Prompt {prompt_slug!r} is not in the database.")
            post = PromptPost(
                prompt_id=prow.id,
                guild_id=guild_id,
                channel_id=channel_id,
                message_id=message_id,
                thread_id=thread_id,
                posted_by=posted_by,
            )
            s.add(post)
            await s.flush()
            return PostInfo(post.id, prow.id, prow.slug, guild_id, channel_id, message_id, thread_id, False)

    def _post_query(self) -> Select[PromptPost, str]:
        return select(PromptPost, PromptRow.slug).join(PromptRow, PromptRow.id == PromptPost.prompt_id)

    @staticmethod
    def _post_info(post: PromptPost, slug: str) -> PostInfo:
        return PostInfo(
            post.id,
            post.prompt_id,
            slug,
            post.guild_id,
            post.channel_id,
            post.message_id,
            post.thread_id,
            post.closed_at is not None,
        )

    async def post_for_thread(self, thread_id: int) -> PostInfo | None:
        """The prompt post whose thread this is, if any."""
        async with self._tx() as s:
            row = (await s.execute(self._post_query().where(PromptPost.thread_id == thread_id))).first()
            return None if row is None else self._post_info(row[0], row[1])

    async def open_posts(self) -> list[PostInfo]:
        """Every posted prompt thread that still counts replies."""
        async with self._tx() as s:
            rows = await s.execute(self._post_query().where(PromptPost.closed_at.is_(None)))
            return [self._post_info(r[0], r[1]) for r in rows]

    # -- replies and stances ------------------------------------------------------------------------------------

    async def add_reply(
        self, post: PostInfo, *, message_id: int, author_id: int, content: str, created_at: datetime
    ) -> ReplyRef | None:
        """Store a reply once; returns ``None`` when this message id is already stored (duplicate event)."""
        async with self._tx() as s:
            stmt = (
                self._insert(s, Reply)
                .values(
                    message_id=message_id,
                    post_id=post.id,
                    prompt_id=post.prompt_row_id,
                    guild_id=post.guild_id,
                    channel_id=post.thread_id,
                    author_id=author_id,
                    content=content,
                    created_at=created_at,
                    status="pending",
                )
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(Reply.id)
            )
            reply_id = await s.scalar(stmt)
            if reply_id is None:
                return None
            return ReplyRef(reply_id, message_id, post.prompt_slug, post.guild_id, author_id, content)

    async def edit_reply(self, message_id: int, content: str, edited_at: datetime) -> ReplyRef | None:
        """Store an edit; returns the reply to reclassify, or ``None`` if the message is not a stored reply."""
        async with self._tx() as s:
            reply = await s.scalar(select(Reply).where(Reply.message_id == message_id, Reply.deleted_at.is_(None)))
            if reply is None or reply.content == content:
                return None
            reply.content, reply.edited_at, reply.status = content, edited_at, "pending"
            slug = await s.scalar(select(PromptRow.slug).where(PromptRow.id == reply.prompt_id))
            assert slug is not None
            return ReplyRef(reply.id, message_id, slug, reply.guild_id, reply.author_id, content)

    async def delete_reply(self, message_id: int) -> bool:
        """Retract a deleted message from the tally (the row stays, marked deleted, its text removed)."""
        async with self._tx() as s:
            reply = await s.scalar(select(Reply).where(Reply.message_id == message_id, Reply.deleted_at.is_(None)))
            if reply is None:
                return False
            reply.deleted_at, reply.content = utcnow(), None
            await s.flush()
            await self._recount_member(s, reply.prompt_id, reply.guild_id, reply.author_id)
            return True

    async def save_stance(
        self, reply_id: int, result: StanceResult, *, model_version: str, source: str = "model"
    ) -> None:
        """Make ``result`` the reply's current stance and update what the tally counts."""
        async with self._tx() as s:
            reply = await s.get(Reply, reply_id)
            if reply is None or reply.deleted_at is not None:
                return
            await s.execute(
                update(Stance).where(Stance.reply_id == reply_id, Stance.is_current).values(is_current=False)
            )
            s.add(
                Stance(
                    reply_id=reply_id,
                    prompt_id=reply.prompt_id,
                    guild_id=reply.guild_id,
                    author_id=reply.author_id,
                    label=result.label,
                    confidence=result.confidence,
                    model_version=model_version[:120],
                    reason=(result.reason or None) and result.reason[:200],
                    source=source,
                    is_current=True,
                )
            )
            reply.status = "classified"
            await s.flush()
            await self._recount_member(s, reply.prompt_id, reply.guild_id, reply.author_id)

    async def _recount_member(self, s: AsyncSession, prompt_id: int, guild_id: int, author_id: int) -> None:
        """Recompute which of one member's stances count for a prompt (cheap: one member's rows)."""
        member = and_(Stance.prompt_id == prompt_id, Stance.guild_id == guild_id, Stance.author_id == author_id)
        await s.execute(update(Stance).where(member, Stance.counted).values(counted=False))
        live = (
            select(Stance.id, Stance.label)
            .join(Reply, Reply.id == Stance.reply_id)
            .where(member, Stance.is_current, Reply.deleted_at.is_(None))
            .order_by(Reply.created_at.desc(), Reply.message_id.desc())
        )
        rows = (await s.execute(live)).all()
        if self.count_mode == "reply":
            ids = [r.id for r in rows]
        else:
            # The latest reply that takes a stance wins; a member with only unclear replies counts as unclear.
            chosen = next((r for r in rows if r.label != UNCLEAR), rows[0] if rows else None)
            ids = [chosen.id] if chosen is not None else []
        if ids:
            await s.execute(update(Stance).where(Stance.id.in_(ids)).values(counted=True))

    async def pending_replies(self, limit: int = 500) -> list[ReplyRef]:
        """Replies stored but not yet classified (e.g. the bot stopped before classifying them)."""
        async with self._tx() as s:
            rows = await s.execute(
                select(Reply, PromptRow.slug)
                .join(PromptRow, PromptRow.id == Reply.prompt_id)
                .where(Reply.status == "pending", Reply.deleted_at.is_(None))
                .order_by(Reply.id)
                .limit(limit)
            )
            return [ReplyRef(r.id, r.message_id, slug, r.guild_id, r.author_id, r.content or "") for r, slug in rows]

    async def stance_of(self, message_id: int) -> StoredStance | None:
        """The current stance of the reply with this message id."""
        async with self._tx() as s:
            row = (
                await s.execute(
                    select(Stance, Reply.message_id)
                    .join(Reply, Reply.id == Stance.reply_id)
                    .where(Reply.message_id == message_id, Stance.is_current)
                )
            ).first()
            if row is None:
                return None
            st, mid = row
            return StoredStance(mid, st.label, st.confidence, st.model_version, st.reason, st.source, st.counted)

    async def tally(self, prompt: Prompt, guild_id: int) -> Tally:
        """Counts per label of the stances that count, for one prompt in one guild."""
        async with self._tx() as s:
            prow = await self._prompt_row(s, prompt.id, guild_id)
            counts: dict[str, int] = {}
            if prow is not None:
                rows = await s.execute(
                    select(Stance.label, func.count())
                    .where(Stance.prompt_id == prow.id, Stance.guild_id == guild_id, Stance.counted)
                    .group_by(Stance.label)
                )
                counts = {label: int(n) for label, n in rows}
            return Tally(prompt.id, prompt.label_names, counts)

    async def count_replies(self, message_ids: Sequence[int] | None = None) -> int:
        """How many reply rows exist (optionally among ``message_ids``)."""
        async with self._tx() as s:
            q = select(func.count()).select_from(Reply)
            if message_ids is not None:
                q = q.where(Reply.message_id.in_(list(message_ids)))
            return int(await s.scalar(q) or 0)
