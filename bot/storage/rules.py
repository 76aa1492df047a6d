"""The rules every write applies, each written once: the guild row, opt-outs, the per-member lock, a stance row, the
review rule, the counting rule, and inserting replies. Functions over an open session, so that a store's
transaction applies them to exactly the rows it touched.

Counting: ``stances.is_current`` marks a reply's latest stance; ``stances.counted`` and ``declared_stances.counted``
mark what the tally counts. Every write that can change what counts for a member (a new stance, an edit, a
deletion, a relabel, a declaration, an opt-out) calls :func:`recount` for the members it touched, inside the same
transaction, so a tally is a plain ``GROUP BY`` over the ``counted`` rows. :func:`recount` applies
:func:`bot.core.counting.count_member`; model stances go through :func:`update_reviews` (the review rule of
:mod:`bot.core.moderation`); every stance row is built by :func:`stance_row`.

On PostgreSQL every statement has a fixed text whatever the batch size (lists travel as one array parameter,
``= ANY(:ids)`` and ``unnest``), so asyncpg prepares each statement once; members are locked (an advisory lock per
member, in sorted order) before they are recounted, so concurrent writers neither race nor deadlock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, any_, exists, insert, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from bot.core.counting import CountingRules, LiveStance, count_member
from bot.core.moderation import needs_review, runner_up
from bot.core.periods import as_utc
from bot.core.stance import StanceResult
from bot.storage.db import dialect_of, insert_for
from bot.storage.models import DeclaredStance, Guild, OptOut, Reply, ReviewItem, Stance, utcnow
from bot.storage.records import (
    Member,
    NewReply,
)

#: What a lost or refused database connection raises in the pipeline's writes (SQLAlchemy wraps the driver's
#: errors): the errors that mean "the database is down", never a bug in the code.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)

_REPLY_COLUMNS = ("message_id", "post_id", "prompt_id", "guild_id", "channel_id", "author_id", "content", "created_at")
_REPLY_TYPES = ("bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "text", "timestamptz")
_STANCE_COLUMNS = (
    *("reply_id", "prompt_id", "guild_id", "author_id", "label", "confidence", "model_version", "reason", "source"),
    *("is_current", "counted", "created_at", "language", "encoder"),
)
_STANCE_TYPES = (
    *("bigint",) * 4,
    *("text", "float8", "text", "text", "text", "boolean", "boolean", "timestamptz", "text", "text"),
)


def _unnest_insert(
    table: str, columns: Sequence[str], types: Sequence[str], *, extra: tuple[str, str] | None = None, tail: str = ""
) -> str:
    """PostgreSQL: insert a whole batch passed as one array per column (constant names only, never user input).

    ``extra``: (column, SQL expression) for a column every row gets the same value of."""
    arrays = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(columns, types, strict=True))
    names, values = list(columns), [f"u.{c}" for c in columns]
    if extra is not None:
        names.append(extra[0])
        values.append(extra[1])
    return (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(values)} "  # noqa: S608
        f"FROM unnest({arrays}) AS u({', '.join(columns)}) {tail}"
    )


_PG_INSERT_REPLIES = text(
    _unnest_insert(
        "replies",
        _REPLY_COLUMNS,
        _REPLY_TYPES,
        extra=("status", "CAST(:status AS text)"),
        tail="ON CONFLICT (message_id) DO NOTHING RETURNING id, message_id",
    )
)
_PG_INSERT_STANCES = text(_unnest_insert("stances", _STANCE_COLUMNS, _STANCE_TYPES))
_PG_LOCK_MEMBERS = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS t(k)")


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in names}


def pg(s: AsyncSession) -> bool:
    """Whether the session talks to PostgreSQL."""
    return dialect_of(s) == "postgresql"


def among(s: AsyncSession, column: InstrumentedAttribute[int], values: Iterable[int]) -> ColumnElement[bool]:
    """``column IN values``: one array parameter on PostgreSQL (a fixed statement text), a list on SQLite."""
    values = list(values)
    if pg(s):
        return column == any_(literal(values, type_=postgresql.ARRAY(BigInteger)))
    return column.in_(values)


# -- the rules, once ---------------------------------------------------------------------------------------------


async def ensure_guild(s: AsyncSession, guild_id: int, name: str | None = None) -> None:
    """Create the guild row if missing; with a ``name``, keep it current (``None`` leaves a stored name alone)."""
    stmt = insert_for(s, Guild).values(id=guild_id, name=(name or "")[:100], timezone="UTC", created_at=utcnow())
    if name is None:
        await s.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
    else:
        await s.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"name": name[:100]}))


async def opted_out(
    s: AsyncSession, guild_ids: Iterable[int], user_ids: Iterable[int] | None = None
) -> set[tuple[int, int]]:
    """The (guild id, user id) pairs of members who opted out of being counted, in these guilds (and among these
    users, when given)."""
    guilds = set(guild_ids)
    if not guilds:
        return set()
    query = select(OptOut.guild_id, OptOut.user_id).where(among(s, OptOut.guild_id, guilds))
    if user_ids is not None:
        users = set(user_ids)
        if not users:
            return set()
        query = query.where(among(s, OptOut.user_id, users))
    return {(int(g), int(u)) for g, u in await s.execute(query)}


def author_counted() -> ColumnElement[bool]:
    """SQL, for queries over ``replies``: the reply's author has not opted out in its guild."""
    return ~exists().where(OptOut.guild_id == Reply.guild_id, OptOut.user_id == Reply.author_id)


async def is_opted_out(s: AsyncSession, guild_id: int, user_id: int) -> bool:
    """Whether one member opted out in one guild."""
    return bool(await opted_out(s, [guild_id], [user_id]))


def member_lock_key(prompt_id: int, guild_id: int, author_id: int) -> int:
    """The PostgreSQL advisory-lock key of one member's counting on one prompt."""
    return (prompt_id * 1_000_003 + guild_id * 7_919 + author_id) % (2**63 - 1)


async def lock_members(s: AsyncSession, members: Iterable[Member]) -> None:
    """Serialise writes to these members' counting on PostgreSQL, locking in sorted key order (no deadlocks);
    SQLite serialises every write already."""
    if pg(s):
        keys = sorted({member_lock_key(*m) for m in members})
        if keys:
            await s.execute(_PG_LOCK_MEMBERS, {"keys": keys})


def stance_row(
    reply_id: int, member: Member, result: StanceResult, *, model_version: str, source: str, now: datetime
) -> dict[str, Any]:
    """The ``stances`` row of a new current stance (version and reason cut to their columns' sizes); a result that
    names its own model (the multilingual head's) is stored with that version."""
    prompt_id, guild_id, author_id = member
    model_version = result.model_version or model_version
    return {
        "reply_id": reply_id,
        "prompt_id": prompt_id,
        "guild_id": guild_id,
        "author_id": author_id,
        "label": result.label,
        "confidence": float(result.confidence),
        "model_version": model_version[:120],
        "reason": (result.reason or None) and result.reason[:200],
        "source": source,
        "is_current": True,
        "counted": False,
        "created_at": now,
        "language": result.language[:8] if result.language else None,
        "encoder": result.encoder[:40] if result.encoder else None,
    }


async def add_stances(s: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Make these :func:`stance_row` rows their replies' current stances (the previous ones stay as history)."""
    if not rows:
        return
    await s.execute(
        update(Stance)
        .where(among(s, Stance.reply_id, {r["reply_id"] for r in rows}), Stance.is_current)
        .values(is_current=False)
        .execution_options(synchronize_session=False)
    )
    conn = await s.connection()
    if pg(s):
        await conn.execute(_PG_INSERT_STANCES, _columns(rows, _STANCE_COLUMNS))
    else:
        await conn.execute(insert(Stance), list(rows))


async def update_reviews(s: AsyncSession, writes: Sequence[tuple[int, Member, StanceResult]], *, below: float) -> None:
    """The review rule for model stances ``(reply id, member, result)``: a reply the model was unsure about
    (:func:`bot.core.moderation.needs_review`) gets an open review item; one it is now sure about is closed."""
    if not writes:
        return
    items = {
        i.reply_id: i
        for i in await s.scalars(select(ReviewItem).where(among(s, ReviewItem.reply_id, [w[0] for w in writes])))
    }
    new = []
    for reply_id, (prompt_id, guild_id, _author), result in writes:
        item = items.get(reply_id)
        if needs_review(result, below=below):
            if item is None:
                new.append(
                    {
                        "reply_id": reply_id,
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


async def recount(s: AsyncSession, members: Iterable[Member], rules: CountingRules) -> None:
    """Re-apply the counting rules to these members' stances (cheap: their rows only), with a fixed number of
    statements; only stances whose ``counted`` flag changes are written."""
    wanted = set(members)
    if not wanted:
        return
    await lock_members(s, wanted)
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
            among(s, Stance.prompt_id, prompts),
            among(s, Stance.guild_id, guilds),
            among(s, Stance.author_id, authors),
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
            among(s, DeclaredStance.prompt_id, prompts),
            among(s, DeclaredStance.guild_id, guilds),
            among(s, DeclaredStance.author_id, authors),
        )
    ):
        if (d.prompt_id, d.guild_id, d.author_id) in wanted:
            declared[(d.prompt_id, d.guild_id, d.author_id)] = d
    opted = await opted_out(s, guilds, authors)
    counted: set[int] = set()
    for member in wanted:
        decl = declared.get(member)
        result = count_member(
            live[member],
            rules=rules,
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
                .where(among(s, Stance.id, ids))
                .values(counted=value)
                .execution_options(synchronize_session=False)
            )
    await s.flush()


async def recount_everywhere(s: AsyncSession, guild_id: int, user_id: int, rules: CountingRules) -> None:
    """:func:`recount` a member on every prompt they have stances on in a guild (after an opt-out or opt-in)."""
    prompt_ids = await s.scalars(
        select(Stance.prompt_id).where(Stance.guild_id == guild_id, Stance.author_id == user_id).distinct()
    )
    await recount(s, {(int(pid), guild_id, user_id) for pid in prompt_ids}, rules)


async def insert_replies(s: AsyncSession, items: Sequence[NewReply], *, status: str = "pending") -> dict[int, int]:
    """Insert replies not stored yet (first occurrence of each message id, authors who did not opt out);
    returns ``{message id: reply id}`` of those inserted."""
    opted = await opted_out(s, {i.post.guild_id for i in items}, {i.author_id for i in items})
    first: dict[int, NewReply] = {}
    for item in items:
        if item.message_id not in first and (item.post.guild_id, item.author_id) not in opted:
            first[item.message_id] = item
    if not first:
        return {}
    rows = [
        {
            "message_id": item.message_id,
            "post_id": item.post.id,
            "prompt_id": item.post.prompt_row_id,
            "guild_id": item.post.guild_id,
            "channel_id": item.post.thread_id,
            "author_id": item.author_id,
            "content": item.content,
            "created_at": as_utc(item.created_at),
        }
        for item in first.values()
    ]
    conn = await s.connection()
    if pg(s):
        inserted = await conn.execute(_PG_INSERT_REPLIES, {**_columns(rows, _REPLY_COLUMNS), "status": status})
    else:
        stmt = (
            insert_for(s, Reply)
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(Reply.id, Reply.message_id)
        )
        inserted = await conn.execute(stmt, [{**row, "status": status} for row in rows])
    return {int(message_id): int(reply_id) for reply_id, message_id in inserted}
