"""Digest storage: the figures a digest shows (aggregated in SQL), schedules, and the claim that posts it once.

Definitions (also in :mod:`bot.core.digest`):

* a period's stances = the tally's counting rule applied to the replies written in the period: each member's
  latest reply of the period that takes a stance (else ``unclear``), or every reply in ``reply`` count mode. One
  window-function query over ``replies(prompt_id, guild_id, created_at)`` covers every period of the trend, so the
  cost follows the replies in those periods, not the size of the table;
* a period's activity = its replies (deleted ones left out), their distinct authors and their current stances;
* the overall tally = :meth:`Repository.tally` (the live counted stances, declared stances included);
* a period's representative reply per stance = its counted reply of that stance with the highest confidence
  (counted replies only, so a member who opted out is never quoted).

Members who opted out (``opt_outs``, when that table exists) are left out of every figure.

Posting once: :meth:`DigestStore.claim_digest` inserts the ``digest_posts`` row for (prompt, guild, period kind,
period start) before anything is sent; the unique key lets exactly one process win. A claim that was never marked
posted (the post failed or the process died) can be taken over after ``stale_after``, at most ``MAX_ATTEMPTS``
times, and the publisher first looks for a message that did go out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    case,
    func,
    literal,
    literal_column,
    select,
    text,
    true,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.digest import Digest, PeriodFigures, Quote, build_digest
from bot.core.errors import UnknownPromptError
from bot.core.periods import Cadence, Period, PeriodKind, as_utc, parse_kind
from bot.core.prompts import UNCLEAR, Prompt
from bot.core.shards import ShardSet
from bot.storage.db import dialect_of, insert_for, transaction
from bot.storage.models import (
    Base,
    DigestPost,
    DigestSchedule,
    Guild,
    PromptRow,
    PromptSchedule,
    Reply,
    Stance,
    utcnow,
)
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

#: A claim not marked posted after this long is considered abandoned (its process died) and may be taken over.
STALE_CLAIM = timedelta(minutes=10)
#: How many times one digest is attempted before it is given up.
MAX_ATTEMPTS = 3
#: How many periods the trend shows by default (the digest's own period included).
HISTORY = 8
#: PostgreSQL memory for the figures query's sort and hash (per transaction, ``SET LOCAL``).
FIGURES_WORK_MEM = "64MB"

PromptStatus = Literal["pending", "posting", "posted", "failed", "cancelled"]


def served(guild_id: Any, shards: ShardSet | None) -> ColumnElement[bool]:
    """SQL: the row's guild is served by ``shards`` (Discord's ``(guild_id >> 22) % count``); always true for
    ``None``. Works on SQLite and PostgreSQL."""
    if shards is None:
        return true()
    shifted = type_coerce(guild_id.op(">>")(literal_column("22")), BigInteger)
    return (shifted % literal_column(str(int(shards.count)))).in_(sorted(shards.ids))


@dataclass(frozen=True)
class ScheduleInfo:
    """A digest schedule."""

    id: int
    guild_id: int
    prompt_slug: str
    channel_id: int
    cadence: Cadence
    next_due_at: datetime
    active: bool
    created_by: int | None


@dataclass(frozen=True)
class DigestClaim:
    """The right to post one period's digest. ``attempts`` > 1 when an abandoned claim was taken over."""

    id: int
    schedule_id: int | None
    prompt_slug: str
    guild_id: int
    channel_id: int
    period: Period
    cadence: Cadence
    late: bool
    attempts: int


@dataclass(frozen=True)
class PromptScheduleInfo:
    """A prompt to be posted at a set time."""

    id: int
    guild_id: int
    prompt_slug: str
    channel_id: int
    post_at: datetime
    timezone: str
    status: str
    created_by: int | None


def _schedule_info(row: DigestSchedule, slug: str) -> ScheduleInfo:
    cadence = Cadence(parse_kind(row.period_kind), row.weekday, row.local_time, row.timezone)
    return ScheduleInfo(
        row.id, row.guild_id, slug, row.channel_id, cadence, as_utc(row.next_due_at), row.active, row.created_by
    )


def _prompt_schedule_info(row: PromptSchedule, slug: str) -> PromptScheduleInfo:
    return PromptScheduleInfo(
        row.id, row.guild_id, slug, row.channel_id, as_utc(row.post_at), row.timezone, row.status, row.created_by
    )


class DigestStore:
    """Digest queries, schedules and claims over one sessionmaker. Every method is one transaction."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.sessions: async_sessionmaker[AsyncSession] = repo.sessions

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """One session in one transaction (a database that is down raises :class:`StorageError`)."""
        return transaction(self.sessions)

    @staticmethod
    async def _prompt_row_id(s: AsyncSession, slug: str, guild_id: int) -> int:
        """The row of prompt ``slug`` for a guild: the guild's own, else the global one."""
        rows = await s.execute(
            select(PromptRow.id, PromptRow.guild_id).where(
                PromptRow.slug == slug, (PromptRow.guild_id == guild_id) | PromptRow.guild_id.is_(None)
            )
        )
        found = sorted(rows.all(), key=lambda r: r.guild_id is None)
        if not found:
            raise UnknownPromptError(slug, [])
        return int(found[0].id)

    @staticmethod
    async def _ensure_guild(s: AsyncSession, guild_id: int) -> Guild:
        guild = await s.get(Guild, guild_id)
        if guild is None:
            guild = Guild(id=guild_id, name="", timezone="UTC", created_at=utcnow())
            s.add(guild)
            await s.flush()
        return guild

    # -- guild time zone --------------------------------------------------------------------------------------

    async def guild_timezone(self, guild_id: int) -> str | None:
        """The zone a moderator set for the guild; ``None`` when unset (the column's default ``UTC`` = unset)."""
        async with self.transaction() as s:
            tz = await s.scalar(select(Guild.timezone).where(Guild.id == guild_id))
            return tz if tz and tz != "UTC" else None

    async def set_guild_timezone(self, guild_id: int, tz: str, *, now: datetime) -> list[ScheduleInfo]:
        """Set the guild's zone and move its active schedules to it (their next fire time is recomputed)."""
        async with self.transaction() as s:
            guild = await self._ensure_guild(s, guild_id)
            guild.timezone = tz
            rows = await s.execute(
                select(DigestSchedule, PromptRow.slug)
                .join(PromptRow, PromptRow.id == DigestSchedule.prompt_id)
                .where(DigestSchedule.guild_id == guild_id, DigestSchedule.active)
            )
            moved = []
            for row, slug in rows:
                row.timezone = tz
                row.next_due_at = _schedule_info(row, slug).cadence.next_boundary(now)
                moved.append(_schedule_info(row, slug))
            return moved

    # -- digest schedules -------------------------------------------------------------------------------------

    async def upsert_schedule(
        self,
        guild_id: int,
        prompt_slug: str,
        channel_id: int,
        cadence: Cadence,
        *,
        created_by: int | None,
        now: datetime,
    ) -> ScheduleInfo:
        """Create the guild's schedule for this prompt and period kind, or move it (channel, day, time, zone)."""
        next_due = cadence.next_boundary(now)
        async with self.transaction() as s:
            await self._ensure_guild(s, guild_id)
            prompt_row = await self._prompt_row_id(s, prompt_slug, guild_id)
            values: dict[str, Any] = {
                "channel_id": channel_id,
                "weekday": cadence.weekday,
                "local_time": cadence.at,
                "timezone": cadence.tz,
                "created_by": created_by,
                "active": True,
                "next_due_at": next_due,
            }
            stmt = insert_for(s, DigestSchedule).values(
                guild_id=guild_id, prompt_id=prompt_row, period_kind=cadence.kind, created_at=as_utc(now), **values
            )
            stmt = stmt.on_conflict_do_update(index_elements=["guild_id", "prompt_id", "period_kind"], set_=values)
            schedule_id = await s.scalar(stmt.returning(DigestSchedule.id))
            assert schedule_id is not None
            row = await s.get(DigestSchedule, schedule_id, populate_existing=True)
            assert row is not None
            return _schedule_info(row, prompt_slug)

    def _schedule_query(self) -> Any:
        return select(DigestSchedule, PromptRow.slug).join(PromptRow, PromptRow.id == DigestSchedule.prompt_id)

    async def schedules(self, guild_id: int | None = None, *, active_only: bool = True) -> list[ScheduleInfo]:
        """Schedules of one guild (or all), soonest first."""
        async with self.transaction() as s:
            q = self._schedule_query().order_by(DigestSchedule.next_due_at, DigestSchedule.id)
            if guild_id is not None:
                q = q.where(DigestSchedule.guild_id == guild_id)
            if active_only:
                q = q.where(DigestSchedule.active)
            return [_schedule_info(row, slug) for row, slug in await s.execute(q)]

    async def cancel_schedules(
        self,
        guild_id: int,
        *,
        schedule_id: int | None = None,
        prompt_slug: str | None = None,
        kind: PeriodKind | None = None,
    ) -> list[ScheduleInfo]:
        """Stop active schedules of a guild: one by id, or a prompt's (all kinds, or one); returns those stopped."""
        async with self.transaction() as s:
            q = self._schedule_query().where(DigestSchedule.guild_id == guild_id, DigestSchedule.active)
            if schedule_id is not None:
                q = q.where(DigestSchedule.id == schedule_id)
            if prompt_slug is not None:
                q = q.where(PromptRow.slug == prompt_slug)
            if kind is not None:
                q = q.where(DigestSchedule.period_kind == kind)
            stopped = []
            for row, slug in await s.execute(q):
                row.active = False
                stopped.append(_schedule_info(row, slug))
            return stopped

    async def due_schedules(self, now: datetime, *, shards: ShardSet | None = None) -> list[ScheduleInfo]:
        """Active schedules whose next fire time has come (of the guilds ``shards`` serves)."""
        async with self.transaction() as s:
            q = (
                self._schedule_query()
                .where(
                    DigestSchedule.active,
                    DigestSchedule.next_due_at <= as_utc(now),
                    served(DigestSchedule.guild_id, shards),
                )
                .order_by(DigestSchedule.next_due_at, DigestSchedule.id)
            )
            return [_schedule_info(row, slug) for row, slug in await s.execute(q)]

    async def advance_schedule(self, schedule: ScheduleInfo, now: datetime) -> datetime:
        """Set the schedule's next fire time to its first boundary after ``now`` (idempotent; racing is harmless)."""
        next_due = schedule.cadence.next_boundary(now)
        async with self.transaction() as s:
            await s.execute(
                update(DigestSchedule)
                .where(DigestSchedule.id == schedule.id, DigestSchedule.next_due_at < next_due)
                .values(next_due_at=next_due)
            )
        return next_due

    async def next_wakeup(
        self, *, stale_after: timedelta = STALE_CLAIM, shards: ShardSet | None = None
    ) -> datetime | None:
        """The earliest moment anything is due: a digest schedule, a prompt post or the retry of a failed digest
        (of the guilds ``shards`` serves)."""
        async with self.transaction() as s:
            digest = await s.scalar(
                select(func.min(DigestSchedule.next_due_at)).where(
                    DigestSchedule.active, served(DigestSchedule.guild_id, shards)
                )
            )
            prompt = await s.scalar(
                select(func.min(PromptSchedule.post_at)).where(
                    PromptSchedule.status == "pending", served(PromptSchedule.guild_id, shards)
                )
            )
            retry = await s.scalar(
                select(func.min(DigestPost.claimed_at)).where(
                    DigestPost.posted_at.is_(None),
                    DigestPost.attempts < MAX_ATTEMPTS,
                    served(DigestPost.guild_id, shards),
                )
            )
            times = [as_utc(t) for t in (digest, prompt) if t is not None]
            if retry is not None:
                times.append(as_utc(retry) + stale_after + timedelta(seconds=1))
            return min(times) if times else None

    # -- claims -----------------------------------------------------------------------------------------------

    async def claim_digest(
        self, schedule: ScheduleInfo, period: Period, *, worker: str, now: datetime, late: bool
    ) -> DigestClaim | None:
        """Claim the digest of ``period`` for a schedule: ``None`` when another process (or an earlier run) has it."""
        async with self.transaction() as s:
            prompt_row = await self._prompt_row_id(s, schedule.prompt_slug, schedule.guild_id)
            key = {
                "prompt_id": prompt_row,
                "guild_id": schedule.guild_id,
                "period_kind": period.kind,
                "period_start": period.start,
            }
            stmt = (
                insert_for(s, DigestPost)
                .values(
                    **key,
                    schedule_id=schedule.id,
                    period_end=period.end,
                    timezone=period.tz,
                    channel_id=schedule.channel_id,
                    claimed_by=worker[:64],
                    claimed_at=as_utc(now),
                    attempts=1,
                    late=late,
                )
                .on_conflict_do_nothing(index_elements=list(key))
                .returning(DigestPost.id)
            )
            claim_id = await s.scalar(stmt)
            if claim_id is None:
                return None
            return DigestClaim(
                claim_id,
                schedule.id,
                schedule.prompt_slug,
                schedule.guild_id,
                schedule.channel_id,
                period,
                schedule.cadence,
                late,
                1,
            )

    def _stale(self, now: datetime, stale_after: timedelta) -> ColumnElement[bool]:
        return and_(
            DigestPost.posted_at.is_(None),
            DigestPost.claimed_at < as_utc(now) - stale_after,
            DigestPost.attempts < MAX_ATTEMPTS,
        )

    async def abandoned_claims(
        self, now: datetime, *, stale_after: timedelta = STALE_CLAIM, shards: ShardSet | None = None
    ) -> list[int]:
        """Ids of claims never marked posted within ``stale_after`` (their post failed or their process died), of
        the guilds ``shards`` serves."""
        async with self.transaction() as s:
            q = select(DigestPost.id).where(self._stale(now, stale_after), served(DigestPost.guild_id, shards))
            rows = await s.scalars(q.order_by(DigestPost.id))
            return list(rows)

    async def take_over(
        self, claim_id: int, *, worker: str, now: datetime, grace: timedelta, stale_after: timedelta = STALE_CLAIM
    ) -> DigestClaim | None:
        """Take over an abandoned claim (one process wins: a conditional update); ``None`` if it is not abandoned."""
        async with self.transaction() as s:
            taken = await s.execute(
                update(DigestPost)
                .where(DigestPost.id == claim_id, self._stale(now, stale_after))
                .values(claimed_by=worker[:64], claimed_at=as_utc(now), attempts=DigestPost.attempts + 1)
                .returning(DigestPost.id)
            )
            if taken.first() is None:
                return None
            found = (
                await s.execute(
                    select(DigestPost, DigestSchedule, PromptRow.slug)
                    .join(PromptRow, PromptRow.id == DigestPost.prompt_id)
                    .outerjoin(DigestSchedule, DigestSchedule.id == DigestPost.schedule_id)
                    .where(DigestPost.id == claim_id)
                )
            ).one()
            post, schedule_row, slug = found
            if schedule_row is None:
                post.attempts = MAX_ATTEMPTS
                return None
            period = Period(
                parse_kind(post.period_kind), as_utc(post.period_start), as_utc(post.period_end), post.timezone
            )
            post.late = as_utc(now) > period.end + grace
            cadence = _schedule_info(schedule_row, slug).cadence
            return DigestClaim(
                post.id,
                post.schedule_id,
                slug,
                post.guild_id,
                post.channel_id,
                period,
                cadence,
                post.late,
                post.attempts,
            )

    async def mark_posted(self, claim_id: int, message_id: int, *, now: datetime) -> None:
        """Record that Discord accepted the digest message."""
        async with self.transaction() as s:
            await s.execute(
                update(DigestPost).where(DigestPost.id == claim_id).values(posted_at=as_utc(now), message_id=message_id)
            )

    async def digest_posts(self, guild_id: int) -> list[tuple[str, Period, bool, int | None]]:
        """Posted and claimed digests of a guild: (prompt, period, late, message id), oldest first."""
        async with self.transaction() as s:
            rows = await s.execute(
                select(DigestPost, PromptRow.slug, DigestSchedule.timezone)
                .join(PromptRow, PromptRow.id == DigestPost.prompt_id)
                .outerjoin(DigestSchedule, DigestSchedule.id == DigestPost.schedule_id)
                .where(DigestPost.guild_id == guild_id)
                .order_by(DigestPost.period_start, DigestPost.id)
            )
            out = []
            for post, slug, tz in rows:
                period = Period(
                    parse_kind(post.period_kind), as_utc(post.period_start), as_utc(post.period_end), tz or "UTC"
                )
                out.append((slug, period, post.late, post.message_id))
            return out

    # -- prompt schedules -------------------------------------------------------------------------------------

    async def add_prompt_schedule(
        self,
        guild_id: int,
        prompt_slug: str,
        channel_id: int,
        post_at: datetime,
        *,
        tz: str,
        created_by: int | None,
        now: datetime,
    ) -> PromptScheduleInfo:
        """Schedule a prompt to be posted in a channel at ``post_at``."""
        async with self.transaction() as s:
            await self._ensure_guild(s, guild_id)
            row = PromptSchedule(
                guild_id=guild_id,
                prompt_id=await self._prompt_row_id(s, prompt_slug, guild_id),
                channel_id=channel_id,
                post_at=as_utc(post_at),
                timezone=tz,
                created_by=created_by,
                created_at=as_utc(now),
                status="pending",
            )
            s.add(row)
            await s.flush()
            return _prompt_schedule_info(row, prompt_slug)

    def _prompt_schedule_query(self) -> Any:
        return select(PromptSchedule, PromptRow.slug).join(PromptRow, PromptRow.id == PromptSchedule.prompt_id)

    async def prompt_schedules(self, guild_id: int, *, pending_only: bool = True) -> list[PromptScheduleInfo]:
        """A guild's scheduled prompt posts, soonest first."""
        async with self.transaction() as s:
            q = self._prompt_schedule_query().where(PromptSchedule.guild_id == guild_id)
            if pending_only:
                q = q.where(PromptSchedule.status == "pending")
            q = q.order_by(PromptSchedule.post_at, PromptSchedule.id)
            return [_prompt_schedule_info(row, slug) for row, slug in await s.execute(q)]

    async def cancel_prompt_schedule(self, guild_id: int, schedule_id: int) -> PromptScheduleInfo | None:
        """Cancel a pending prompt post of this guild; ``None`` when there is no such pending post."""
        async with self.transaction() as s:
            found = (
                await s.execute(
                    self._prompt_schedule_query().where(
                        PromptSchedule.id == schedule_id,
                        PromptSchedule.guild_id == guild_id,
                        PromptSchedule.status == "pending",
                    )
                )
            ).first()
            if found is None:
                return None
            row, slug = found
            row.status = "cancelled"
            return _prompt_schedule_info(row, slug)

    async def due_prompt_schedules(self, now: datetime, *, shards: ShardSet | None = None) -> list[PromptScheduleInfo]:
        """Pending prompt posts whose time has come (of the guilds ``shards`` serves)."""
        async with self.transaction() as s:
            q = (
                self._prompt_schedule_query()
                .where(
                    PromptSchedule.status == "pending",
                    PromptSchedule.post_at <= as_utc(now),
                    served(PromptSchedule.guild_id, shards),
                )
                .order_by(PromptSchedule.post_at, PromptSchedule.id)
            )
            return [_prompt_schedule_info(row, slug) for row, slug in await s.execute(q)]

    async def claim_prompt_schedule(self, schedule_id: int, *, worker: str, now: datetime) -> bool:
        """Move a pending prompt post to ``posting``; only one process gets ``True``."""
        async with self.transaction() as s:
            result = await s.execute(
                update(PromptSchedule)
                .where(PromptSchedule.id == schedule_id, PromptSchedule.status == "pending")
                .values(status="posting", claimed_by=worker[:64], claimed_at=as_utc(now))
                .returning(PromptSchedule.id)
            )
            return result.first() is not None

    async def finish_prompt_schedule(
        self,
        schedule_id: int,
        status: PromptStatus,
        *,
        now: datetime,
        message_id: int | None = None,
        thread_id: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record how a claimed prompt post ended."""
        async with self.transaction() as s:
            await s.execute(
                update(PromptSchedule)
                .where(PromptSchedule.id == schedule_id)
                .values(
                    status=status,
                    posted_at=as_utc(now) if status == "posted" else None,
                    message_id=message_id,
                    thread_id=thread_id,
                    error=error[:200] if error else None,
                )
            )

    async def fail_abandoned_prompt_posts(
        self, now: datetime, *, stale_after: timedelta = STALE_CLAIM, shards: ShardSet | None = None
    ) -> int:
        """Mark ``posting`` rows whose process died as failed (never re-posted: a thread may already exist)."""
        async with self.transaction() as s:
            result = await s.execute(
                update(PromptSchedule)
                .where(
                    PromptSchedule.status == "posting",
                    PromptSchedule.claimed_at < as_utc(now) - stale_after,
                    served(PromptSchedule.guild_id, shards),
                )
                .values(status="failed", error="abandoned while posting (the bot stopped)")
                .returning(PromptSchedule.id)
            )
            return len(result.all())

    async def forget_user(self, user_id: int) -> int:
        """Remove a member's id from the schedules they created (for forget-me); returns how many rows changed."""
        async with self.transaction() as s:
            changed = 0
            for table in (DigestSchedule, PromptSchedule):
                result = await s.execute(
                    update(table).where(table.created_by == user_id).values(created_by=None).returning(table.id)
                )
                changed += len(result.all())
            return changed

    # -- digest figures ---------------------------------------------------------------------------------------

    async def figures(
        self, prompt: Prompt, guild_id: int, periods: Sequence[Period]
    ) -> tuple[list[PeriodFigures], list[Quote]]:
        """Figures for consecutive ``periods`` (oldest first) and the last period's representative replies."""
        labels = prompt.label_names
        if not periods:
            return [], []
        async with self.transaction() as s:
            try:
                pid = await self._prompt_row_id(s, prompt.id, guild_id)
            except UnknownPromptError:
                return [PeriodFigures(p, dict.fromkeys(labels, 0)) for p in periods], []
            if dialect_of(s) == "postgresql":
                # The window sort and the join hash stay in memory (the default 4 MB spills them to disk).
                await s.execute(text(f"SET LOCAL work_mem = '{FIGURES_WORK_MEM}'"))
            scope = _Scope(pid, guild_id, periods, self.repo.count_mode == "reply", await _opted_out(s, guild_id))
            voices, activity = await _periods(s, scope)
            quotes = await _quotes(s, scope)
        figures = []
        for i, period in enumerate(periods):
            # Stances with labels the prompt no longer has (it was edited) are left out of the figures.
            counts = {label: voices.get(i, {}).get(label, 0) for label in labels}
            replies, members, classified, unclear = activity.get(i, (0, 0, 0, 0))
            figures.append(PeriodFigures(period, counts, replies, members, classified, unclear))
        return figures, [q for q in quotes if q.label in labels]

    async def build_digest(
        self,
        prompt: Prompt,
        guild_id: int,
        period: Period,
        cadence: Cadence,
        *,
        history: int = HISTORY,
        now: datetime | None = None,
        late: bool = False,
        model_note: str = "",
    ) -> Digest:
        """The digest of ``period`` with ``history`` periods of trend (``period`` included)."""
        periods = cadence.history(period, max(history, 2))
        figures, quotes = await self.figures(prompt, guild_id, periods)
        overall, declared = await self.repo.standings(prompt, guild_id)
        return build_digest(
            prompt_id=prompt.id,
            title=prompt.title,
            question=prompt.question,
            guild_id=guild_id,
            labels=prompt.label_names,
            history=figures,
            quotes=quotes,
            overall=dict(overall.counts),
            generated_at=now,
            late=late,
            model_note=model_note,
            declared=declared,
        )


@dataclass(frozen=True)
class _Scope:
    """What the figure queries look at: one prompt in one guild over consecutive periods."""

    prompt_row: int
    guild_id: int
    periods: Sequence[Period]
    every_reply: bool
    opted_out: tuple[int, ...] = ()

    def where(self, *, since: datetime | None = None) -> ColumnElement[bool]:
        """Live replies of the prompt in the guild written in the periods (or since ``since``), opt-outs left out."""
        start = as_utc(since if since is not None else self.periods[0].start)
        clauses = [
            Reply.prompt_id == self.prompt_row,
            Reply.guild_id == self.guild_id,
            Reply.created_at >= start,
            Reply.created_at < as_utc(self.periods[-1].end),
            Reply.deleted_at.is_(None),
        ]
        if self.opted_out:
            clauses.append(Reply.author_id.not_in(self.opted_out))
        return and_(*clauses)

    def period_index(self) -> ColumnElement[int]:
        """The index of the period a reply was written in."""
        last = len(self.periods) - 1
        if last == 0:
            return literal(0)
        return case(*((Reply.created_at < as_utc(p.end), i) for i, p in enumerate(self.periods[:-1])), else_=last)


async def _opted_out(s: AsyncSession, guild_id: int) -> tuple[int, ...]:
    """Members of the guild who opted out of being counted (``opt_outs``, when the schema has it)."""
    table = Base.metadata.tables.get("opt_outs")
    if table is None:
        return ()
    rows = await s.scalars(select(table.c.user_id).where(table.c.guild_id == guild_id))
    return tuple(int(r) for r in rows)


#: Sorts a member's replies for "their latest reply that takes a stance": stances first, then unclear, then
#: replies not classified yet; newest first within each.
def _member_order() -> tuple[ColumnElement[Any], ...]:
    return (
        case((Stance.label.is_(None), 2), (Stance.label == UNCLEAR, 1), else_=0),
        Reply.created_at.desc(),
        Reply.message_id.desc(),
    )


async def _periods(
    s: AsyncSession, scope: _Scope
) -> tuple[dict[int, dict[str, int]], dict[int, tuple[int, int, int, int]]]:
    """One pass over the periods' replies: per period index, the counts per label (the tally's counting rule
    within the period) and the activity (replies, distinct members, classified replies, unclear replies)."""
    period = scope.period_index().label("period")
    first = func.row_number().over(partition_by=(period.element, Reply.author_id), order_by=_member_order())
    inner = (
        select(
            period,
            Stance.label.label("label"),
            case((Stance.label == UNCLEAR, 1), else_=0).label("unclear"),
            first.label("rank"),
        )
        .select_from(Reply)
        .outerjoin(Stance, and_(Stance.reply_id == Reply.id, Stance.is_current))
        .where(scope.where())
        .subquery()
    )
    # One row per (period, label counted for a member or NULL): the window gives members, the rest activity.
    counted_as = case((inner.c.rank == 1, inner.c.label), else_=None) if not scope.every_reply else inner.c.label
    grouped = select(
        inner.c.period,
        counted_as.label("counted_as"),
        func.count(),
        func.count(inner.c.label),
        func.coalesce(func.sum(inner.c.unclear), 0),
        func.coalesce(func.sum(case((inner.c.rank == 1, 1), else_=0)), 0),
    ).group_by(inner.c.period, counted_as)
    counts: dict[int, dict[str, int]] = {}
    totals: dict[int, list[int]] = {}
    for i, label, replies, classified, unclear, members in await s.execute(grouped):
        key = int(i)
        if label is not None:
            counts.setdefault(key, {})[label] = counts.get(key, {}).get(label, 0) + (
                int(classified) if scope.every_reply else int(members)
            )
        total = totals.setdefault(key, [0, 0, 0, 0])
        total[0] += int(replies)
        total[1] += int(members)
        total[2] += int(classified)
        total[3] += int(unclear)
    return counts, {k: (v[0], v[1], v[2], v[3]) for k, v in totals.items()}


async def _quotes(s: AsyncSession, scope: _Scope) -> list[Quote]:
    """The most confident counted reply of each stance written in the last period."""
    rank = (
        func.row_number()
        .over(
            partition_by=Stance.label,
            order_by=(Stance.confidence.desc(), Reply.created_at.desc(), Reply.id.desc()),
        )
        .label("rank")
    )
    inner = (
        select(
            Stance.label,
            Stance.confidence,
            Reply.content,
            Reply.author_id,
            Reply.message_id,
            Reply.channel_id,
            Reply.created_at,
            rank,
        )
        .select_from(Reply)
        .join(Stance, Stance.reply_id == Reply.id)
        .where(
            scope.where(since=scope.periods[-1].start),
            Reply.content.is_not(None),
            Stance.counted,
            Stance.label != UNCLEAR,
        )
        .subquery()
    )
    rows = await s.execute(select(inner).where(inner.c.rank == 1))
    return [
        Quote(
            label=r.label,
            text=r.content or "",
            confidence=float(r.confidence),
            author_id=int(r.author_id),
            message_id=int(r.message_id),
            channel_id=int(r.channel_id),
            created_at=as_utc(r.created_at),
        )
        for r in rows
    ]
