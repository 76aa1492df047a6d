"""Batched writes for the reply pipeline: many replies, or many stances, in one transaction.

:class:`bot.storage.repository.Repository` writes one reply per transaction; at dozens of replies a second that
is most of the event loop's time. :class:`IngestStore` applies the same rules (opt-outs, the counting rules of
:mod:`bot.core.counting`, the review queue of :mod:`bot.core.moderation`) to a whole batch with a fixed number of
statements, so a batch of 200 costs one commit instead of 200. ``tests/storage/test_ingest.py`` checks that a
batch leaves exactly the rows the repository's one-at-a-time path leaves.

Exactly once: a reply is inserted with ``ON CONFLICT (message_id) DO NOTHING``; a stance is saved only while its
reply is still ``pending`` with the text that was classified, so a retried or duplicated classification never
adds a second stance, and a stale one (the reply was edited, deleted or relabelled meanwhile) is dropped.

On PostgreSQL every statement has a fixed text whatever the batch size (lists travel as one array parameter,
``= ANY(:ids)`` and ``unnest``), so asyncpg prepares each statement once.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, any_, func, insert, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bot.core.counting import LiveStance, count_member
from bot.core.moderation import needs_review, runner_up
from bot.core.stance import StanceResult
from bot.storage.db import transaction
from bot.storage.models import DeclaredStance, OptOut, PromptRow, Reply, ReviewItem, Stance, utcnow
from bot.storage.repository import PostInfo, ReplyRef, Repository

log = logging.getLogger(__name__)

#: What a lost or refused database connection raises (SQLAlchemy wraps the driver's errors).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)

Member = tuple[int, int, int]  # (prompt row id, guild id, author id)

_REPLY_COLUMNS = ("message_id", "post_id", "prompt_id", "guild_id", "channel_id", "author_id", "content", "created_at")
_REPLY_TYPES = ("bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text", "timestamptz")
_STANCE_COLUMNS = (
    *("reply_id", "prompt_id", "guild_id", "author_id", "label", "confidence", "model_version", "reason", "source"),
    *("is_current", "counted", "created_at"),
)
_STANCE_TYPES = (*("bigint",) * 4, "text", "float8", "text", "text", "text", "boolean", "boolean", "timestamptz")


def _unnest_insert(
    table: str, columns: Sequence[str], types: Sequence[str], *, constants: str = "", tail: str = ""
) -> str:
    """PostgreSQL: insert a whole batch passed as one array per column (constant names only, never user input).

    ``constants``: ``"column = SQL literal"`` for a column every row gets."""
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(columns, types, strict=True))
    names, values = list(columns), [f"u.{c}" for c in columns]
    if constants:
        name, _, value = constants.partition("=")
        names.append(name.strip())
        values.append(value.strip())
    return (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} "  # noqa: S608
        f"FROM unnest({arrays}) AS u({', '.join(columns)}) {tail}"
    )


_PG_INSERT_REPLIES = text(
    _unnest_insert(
        "replies",
        _REPLY_COLUMNS,
        _REPLY_TYPES,
        constants="status = 'pending'",
        tail="ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id",
    )
)
_PG_INSERT_STANCES = text(_unnest_insert("stances", _STANCE_COLUMNS, _STANCE_TYPES))
_PG_LOCK_MEMBERS = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS t(k)")


def member_lock_key(prompt_id: int, guild_id: int, author_id: int) -> int:
    """The advisory-lock key of one member's counting: the key ``Repository._lock_member`` takes (a test checks
    they agree), so batched and one-at-a-time writers serialise on the same lock."""
    return (prompt_id * 1_000_003 + guild_id * 7_919 + author_id) % (2**63 - 1)


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


@dataclass(frozen=True)
class NewReply:
    """A message to store as a reply to a prompt post."""

    post: PostInfo
    message_id: int
    author_id: int
    content: str
    created_at: datetime


@dataclass(frozen=True)
class StanceWrite:
    """A model's stance for a stored reply; ``reply.content`` is the text that was classified."""

    reply: ReplyRef
    result: StanceResult
    model_version: str


class IngestStore:
    """Batched reply and stance writes over a repository's sessions and rules. Every method is one transaction."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.sessions = repo.sessions

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        # Every SQLAlchemy error is retried by the pipeline; it counts them, so none is logged here.
        return transaction(self.sessions, errors=DATABASE_ERRORS, log_errors=False)

    @staticmethod
    def _pg(session: AsyncSession) -> bool:
        return session.bind is not None and session.bind.dialect.name == "postgresql"

    def _among(self, s: AsyncSession, column: InstrumentedAttribute[int], values: Iterable[int]) -> ColumnElement[bool]:
        """``column IN values``: one array parameter on PostgreSQL (a fixed statement text), a list on SQLite."""
        values = list(values)
        if self._pg(s):
            return column == any_(literal(values, type_=postgresql.ARRAY(BigInteger)))
        return column.in_(values)

    async def ping(self) -> None:
        """Raise :class:`StorageError` unless the database answers."""
        async with self._tx() as s:
            await s.execute(text("SELECT 1"))

    async def _opted_out(self, s: AsyncSession, pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Which (guild id, user id) pairs opted out of being counted."""
        if not pairs:
            return set()
        rows = await s.execute(
            select(OptOut.guild_id, OptOut.user_id).where(
                self._among(s, OptOut.guild_id, {g for g, _ in pairs}),
                self._among(s, OptOut.user_id, {u for _, u in pairs}),
            )
        )
        return {(g, u) for g, u in rows if (g, u) in pairs}

    # -- replies ------------------------------------------------------------------------------------------------

    async def add_replies(self, items: Sequence[NewReply]) -> list[ReplyRef | None]:
        """Store each reply once, as ``pending``; ``None`` for a message id already stored (also earlier in the
        batch) and for authors who opted out in that guild (their text is not stored at all)."""
        results: list[ReplyRef | None] = [None] * len(items)
        if not items:
            return results
        async with self._tx() as s:
            opted = await self._opted_out(s, {(i.post.guild_id, i.author_id) for i in items})
            first: dict[int, int] = {}
            for index, item in enumerate(items):
                if item.message_id not in first and (item.post.guild_id, item.author_id) not in opted:
                    first[item.message_id] = index
            if not first:
                return results
            rows = [
                {
                    "message_id": item.message_id,
                    "post_id": item.post.id,
                    "prompt_id": item.post.prompt_row_id,
                    "guild_id": item.post.guild_id,
                    "channel_id": item.post.thread_id,
                    "author_id": item.author_id,
                    "content": item.content,
                    "created_at": item.created_at,
                }
                for item in (items[i] for i in first.values())
            ]
            conn = await s.connection()
            if self._pg(s):
                inserted = await conn.execute(_PG_INSERT_REPLIES, _columns(rows, _REPLY_COLUMNS))
            else:
                stmt = (
                    sqlite.insert(Reply)
                    .on_conflict_do_nothing(index_elements=["message_id"])
                    .returning(Reply.id, Reply.message_id)
                )
                inserted = await conn.execute(stmt, [{**row, "status": "pending"} for row in rows])
            for reply_id, message_id in inserted:
                index = first[message_id]
                item = items[index]
                results[index] = ReplyRef(
                    id=reply_id,
                    message_id=message_id,
                    prompt_slug=item.post.prompt_slug,
                    guild_id=item.post.guild_id,
                    author_id=item.author_id,
                    content=item.content,
                )
        return results

    async def pending_after(self, after_id: int, limit: int = 256) -> list[ReplyRef]:
        """Up to ``limit`` replies stored but not classified, with row ids above ``after_id``, oldest first."""
        async with self._tx() as s:
            rows = await s.execute(
                select(Reply.id, Reply.message_id, PromptRow.slug, Reply.guild_id, Reply.author_id, Reply.content)
                .join(PromptRow, PromptRow.id == Reply.prompt_id)
                .where(Reply.status == "pending", Reply.deleted_at.is_(None), Reply.id > after_id)
                .order_by(Reply.id)
                .limit(limit)
            )
            return [
                ReplyRef(
                    id=r.id,
                    message_id=r.message_id,
                    prompt_slug=r.slug,
                    guild_id=r.guild_id,
                    author_id=r.author_id,
                    content=r.content or "",
                )
                for r in rows
            ]

    async def last_message_ids(self, thread_ids: Iterable[int]) -> dict[int, int]:
        """The newest stored reply's message id in each of these threads (threads without replies are left out)."""
        ids = list(thread_ids)
        if not ids:
            return {}
        async with self._tx() as s:
            rows = await s.execute(
                select(Reply.channel_id, func.max(Reply.message_id))
                .where(self._among(s, Reply.channel_id, ids))
                .group_by(Reply.channel_id)
            )
            return {int(channel): int(message) for channel, message in rows}

    async def known_message_ids(self, message_ids: Iterable[int]) -> set[int]:
        """Which of these message ids are stored as replies."""
        ids = list(message_ids)
        if not ids:
            return set()
        async with self._tx() as s:
            return set(await s.scalars(select(Reply.message_id).where(self._among(s, Reply.message_id, ids))))

    # -- stances ------------------------------------------------------------------------------------------------

    async def save_stances(self, writes: Sequence[StanceWrite]) -> list[bool]:
        """Save each model stance whose reply is still pending with the classified text; ``False`` for the rest.

        Per batch: the stances, the replies' status, the review queue and the counting of every member touched,
        in one transaction.
        """
        saved = [False] * len(writes)
        if not writes:
            return saved
        async with self._tx() as s:
            ids = sorted({w.reply.id for w in writes})
            query = select(
                Reply.id,
                Reply.status,
                Reply.content,
                Reply.deleted_at,
                Reply.prompt_id,
                Reply.guild_id,
                Reply.author_id,
            ).where(self._among(s, Reply.id, ids))
            if self._pg(s):
                query = query.with_for_update()
            replies = {r.id: r for r in await s.execute(query)}
            chosen: list[tuple[StanceWrite, Member]] = []
            for index, write in enumerate(writes):
                row = replies.get(write.reply.id)
                if row is None or row.deleted_at is not None or row.status != "pending":
                    continue
                if row.content != write.reply.content:
                    continue  # edited since it was classified: the edit's own classification counts
                saved[index] = True
                chosen.append((write, (row.prompt_id, row.guild_id, row.author_id)))
                replies.pop(write.reply.id)  # a second write for the same reply in this batch is dropped
            if not chosen:
                return saved
            chosen_ids = [w.reply.id for w, _ in chosen]
            await s.execute(
                update(Stance)
                .where(self._among(s, Stance.reply_id, chosen_ids), Stance.is_current)
                .values(is_current=False)
                .execution_options(synchronize_session=False)
            )
            now = utcnow()
            rows = [
                {
                    "reply_id": w.reply.id,
                    "prompt_id": member[0],
                    "guild_id": member[1],
                    "author_id": member[2],
                    "label": w.result.label,
                    "confidence": float(w.result.confidence),
                    "model_version": w.model_version[:120],
                    "reason": (w.result.reason or None) and w.result.reason[:200],
                    "source": "model",
                    "is_current": True,
                    "counted": False,
                    "created_at": now,
                }
                for w, member in chosen
            ]
            conn = await s.connection()
            if self._pg(s):
                await conn.execute(_PG_INSERT_STANCES, _columns(rows, _STANCE_COLUMNS))
            else:
                await conn.execute(insert(Stance), rows)
            await s.execute(
                update(Reply)
                .where(self._among(s, Reply.id, chosen_ids))
                .values(status="classified")
                .execution_options(synchronize_session=False)
            )
            await self._update_reviews(s, chosen)
            await self.recount(s, {member for _, member in chosen})
        return saved

    async def _update_reviews(self, s: AsyncSession, chosen: Sequence[tuple[StanceWrite, Member]]) -> None:
        """The repository's review rule (``Repository._update_review``) for a batch, with one lookup."""
        ids = [w.reply.id for w, _ in chosen]
        items = {
            i.reply_id: i for i in await s.scalars(select(ReviewItem).where(self._among(s, ReviewItem.reply_id, ids)))
        }
        new = []
        for write, (prompt_id, guild_id, _author) in chosen:
            result, item = write.result, items.get(write.reply.id)
            if needs_review(result, below=self.repo.review_below):
                if item is None:
                    new.append(
                        {
                            "reply_id": write.reply.id,
                            "prompt_id": prompt_id,
                            "guild_id": guild_id,
                            "model_label": runner_up(result),
                            "confidence": float(result.confidence),
                            "status": "open",
                            "created_at": utcnow(),
                        }
                    )
                else:
                    item.status, item.model_label, item.confidence = "open", runner_up(result), result.confidence
                    item.resolved_by = item.resolved_at = None
            elif item is not None and item.status == "open":
                item.status, item.resolved_at = "closed", utcnow()
        if new:
            await (await s.connection()).execute(insert(ReviewItem), new)
        await s.flush()

    async def recount(self, s: AsyncSession, members: Iterable[Member]) -> None:
        """``Repository.recount_member`` for many members with a fixed number of statements.

        Members are locked in sorted order (the repository's per-member advisory lock on PostgreSQL), so two
        batches touching the same members cannot deadlock. Only stances whose ``counted`` flag changes are written.
        """
        wanted = set(members)
        if not wanted:
            return
        if self._pg(s):
            await s.execute(_PG_LOCK_MEMBERS, {"keys": sorted({member_lock_key(*m) for m in wanted})})
        prompts, guilds, authors = ({m[i] for m in wanted} for i in range(3))
        rows = await s.execute(
            select(
                Stance.id,
                Stance.label,
                Stance.prompt_id,
                Stance.guild_id,
                Stance.author_id,
                Stance.is_current,
                Stance.counted,
                Reply.created_at,
                Reply.message_id,
                Reply.deleted_at,
            )
            .join(Reply, Reply.id == Stance.reply_id)
            .where(
                self._among(s, Stance.prompt_id, prompts),
                self._among(s, Stance.guild_id, guilds),
                self._among(s, Stance.author_id, authors),
                or_(Stance.is_current, Stance.counted),
            )
        )
        live: dict[Member, list[LiveStance]] = defaultdict(list)
        counted_now: set[int] = set()
        for r in rows:
            member = (r.prompt_id, r.guild_id, r.author_id)
            if member not in wanted:
                continue
            if r.counted:
                counted_now.add(r.id)
            if r.is_current and r.deleted_at is None:
                live[member].append(LiveStance(r.id, r.label, r.created_at, r.message_id))
        declared: dict[Member, DeclaredStance] = {}
        for d in await s.scalars(
            select(DeclaredStance).where(
                self._among(s, DeclaredStance.prompt_id, prompts),
                self._among(s, DeclaredStance.guild_id, guilds),
                self._among(s, DeclaredStance.author_id, authors),
            )
        ):
            if (d.prompt_id, d.guild_id, d.author_id) in wanted:
                declared[(d.prompt_id, d.guild_id, d.author_id)] = d
        opted = await self._opted_out(s, {(g, a) for _, g, a in wanted})
        counted: set[int] = set()
        for member in wanted:
            decl = declared.get(member)
            result = count_member(
                live[member],
                rules=self.repo.rules,
                declared=decl.label if decl is not None else None,
                opted_out=(member[1], member[2]) in opted,
            )
            counted.update(result.stance_ids)
            if decl is not None:
                decl.counted, decl.model_label = result.declared_counts, result.model_label
        for ids, value in ((counted_now - counted, False), (counted - counted_now, True)):
            if ids:
                await s.execute(
                    update(Stance)
                    .where(self._among(s, Stance.id, ids))
                    .values(counted=value)
                    .execution_options(synchronize_session=False)
                )
        await s.flush()
