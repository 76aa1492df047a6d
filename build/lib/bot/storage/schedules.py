"""Schedules and claims: digest schedules, scheduled prompt posts, and the claim that posts a digest once.

Posting once: :meth:`Schedules.claim_digest` inserts the ``digest_posts`` row for (prompt, guild, period kind,
period start) before anything is sent; the unique key lets exactly one process win. A claim that was never marked
posted (the post failed or the process died) can be taken over after ``stale_after``, at most ``MAX_ATTEMPTS``
times, and the publisher first looks for a message that did go out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import BigInteger, ColumnElement, and_, func, literal_column, select, true, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.periods import Cadence, Period, PeriodKind, as_utc, parse_kind
from bot.core.shards import ShardSet
from bot.storage.base import Store
from bot.storage.db import insert_for
from bot.storage.models import DigestPost, DigestSchedule, PromptRow, PromptSchedule
from bot.storage.prompts import require_prompt_row
from bot.storage.rules import ensure_guild

#: A claim not marked posted after this long is considered abandoned (its process died) and may be taken over.
STALE_CLAIM = timedelta(minutes=10)
#: How many times one digest is attempted before it is given up.
MAX_ATTEMPTS = 3

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


def schedule_info(row: DigestSchedule, slug: str) -> ScheduleInfo:
    cadence = Cadence(parse_kind(row.period_kind), row.weekday, row.local_time, row.timezone)
    return ScheduleInfo(
        row.id, row.guild_id, slug, row.channel_id, cadence, as_utc(row.next_due_at), row.active, row.created_by
    )


def prompt_schedule_info(row: PromptSchedule, slug: str) -> PromptScheduleInfo:
    return PromptScheduleInfo(
        row.id, row.guild_id, slug, row.channel_id, as_utc(row.post_at), row.timezone, row.status, row.created_by
    )


async def forget_creator(s: AsyncSession, user_id: int) -> int:
    """Remove a member's id from the schedules they created; returns how many rows changed."""
    changed = 0
    for table in (DigestSchedule, PromptSchedule):
        result = await s.execute(
            update(table).where(table.created_by == user_id).values(created_by=None).returning(table.id)
        )
        changed += len(result.all())
    return changed


class Schedules(Store):
    """Digest schedules, claims and scheduled prompt posts; every method is one transaction."""

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
            await ensure_guild(s, guild_id)
            prompt_row = (await require_prompt_row(s, prompt_slug, guild_id)).id
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
            return schedule_info(row, prompt_slug)

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
            return [schedule_info(row, slug) for row, slug in await s.execute(q)]

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
                stopped.append(schedule_info(row, slug))
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
            return [schedule_info(row, slug) for row, slug in await s.execute(q)]

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
            prompt_row = (await require_prompt_row(s, schedule.prompt_slug, schedule.guild_id)).id
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
            cadence = schedule_info(schedule_row, slug).cadence
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
            await ensure_guild(s, guild_id)
            row = PromptSchedule(
                guild_id=guild_id,
                prompt_id=(await require_prompt_row(s, prompt_slug, guild_id)).id,
                channel_id=channel_id,
                post_at=as_utc(post_at),
                timezone=tz,
                created_by=created_by,
                created_at=as_utc(now),
                status="pending",
            )
            s.add(row)
            await s.flush()
            return prompt_schedule_info(row, prompt_slug)

    def _prompt_schedule_query(self) -> Any:
        return select(PromptSchedule, PromptRow.slug).join(PromptRow, PromptRow.id == PromptSchedule.prompt_id)

    async def prompt_schedules(self, guild_id: int, *, pending_only: bool = True) -> list[PromptScheduleInfo]:
        """A guild's scheduled prompt posts, soonest first."""
        async with self.transaction() as s:
            q = self._prompt_schedule_query().where(PromptSchedule.guild_id == guild_id)
            if pending_only:
                q = q.where(PromptSchedule.status == "pending")
            q = q.order_by(PromptSchedule.post_at, PromptSchedule.id)
            return [prompt_schedule_info(row, slug) for row, slug in await s.execute(q)]

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
            return prompt_schedule_info(row, slug)

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
            return [prompt_schedule_info(row, slug) for row, slug in await s.execute(q)]

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
            return await forget_creator(s, user_id)
