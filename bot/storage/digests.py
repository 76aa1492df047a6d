"""Digest queries: the figures a digest shows, aggregated in SQL.

Definitions (also in :mod:`bot.core.digest`):

* a period's stances = the tally's counting rule applied to the replies written in the period: each member's
  latest reply of the period that takes a stance (else ``unclear``), or every reply in ``reply`` count mode. One
  window-function query over ``replies(prompt_id, guild_id, created_at)`` covers every period of the trend, so the
  cost follows the replies in those periods, not the size of the table;
* a period's activity = its replies (deleted ones left out), their distinct authors and their current stances,
  and how many of those a model read in another language (``stances.language`` not ``en``, with an encoder);
* the overall tally = :meth:`bot.storage.tallies.Tallies.tally` (the live counted stances, declared stances
  included);
* a period's representative reply per stance = its counted reply of that stance with the highest confidence
  (counted replies only, so a member who opted out is never quoted).

Members who opted out are left out of every figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.digest import Digest, PeriodFigures, Quote, build_digest
from bot.core.periods import Cadence, Period, as_utc
from bot.core.prompts import UNCLEAR, Prompt
from bot.storage.base import Database, Store
from bot.storage.db import dialect_of
from bot.storage.models import Reply, Stance
from bot.storage.prompts import prompt_row
from bot.storage.rules import opted_out
from bot.storage.tallies import Tallies

#: How many periods the trend shows by default (the digest's own period included).
HISTORY = 8
#: PostgreSQL memory for the figures query's sort and hash (per transaction, ``SET LOCAL``).
FIGURES_WORK_MEM = "64MB"


class DigestQueries(Store):
    """A digest's figures and the digest itself; every method is one transaction."""

    def __init__(self, db: Database, tallies: Tallies) -> None:
        super().__init__(db)
        self.tallies = tallies

    async def figures(
        self, prompt: Prompt, guild_id: int, periods: Sequence[Period]
    ) -> tuple[list[PeriodFigures], list[Quote]]:
        """Figures for consecutive ``periods`` (oldest first) and the last period's representative replies."""
        labels = prompt.label_names
        if not periods:
            return [], []
        async with self.transaction() as s:
            prow = await prompt_row(s, prompt.id, guild_id)
            if prow is None:
                return [PeriodFigures(p, dict.fromkeys(labels, 0)) for p in periods], []
            if dialect_of(s) == "postgresql":
                # The window sort and the join hash stay in memory (the default 4 MB spills them to disk).
                await s.execute(text(f"SET LOCAL work_mem = '{FIGURES_WORK_MEM}'"))
            opted = tuple(sorted(user for _, user in await opted_out(s, [guild_id])))
            scope = _Scope(prow.id, guild_id, periods, self.db.rules.mode == "reply", opted)
            voices, activity = await _periods(s, scope)
            quotes = await _quotes(s, scope)
        figures = []
        for i, period in enumerate(periods):
            # Stances with labels the prompt no longer has (it was edited) are left out of the figures.
            counts = {label: voices.get(i, {}).get(label, 0) for label in labels}
            replies, members, classified, unclear, other = activity.get(i, (0, 0, 0, 0, 0))
            figures.append(PeriodFigures(period, counts, replies, members, classified, unclear, other))
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
        overall, declared = await self.tallies.standings(prompt, guild_id)
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
) -> tuple[dict[int, dict[str, int]], dict[int, tuple[int, int, int, int, int]]]:
    """One pass over the periods' replies: per period index, the counts per label (the tally's counting rule
    within the period) and the activity (replies, distinct members, classified replies, unclear replies, replies
    read in another language)."""
    period = scope.period_index().label("period")
    first = func.row_number().over(partition_by=(period.element, Reply.author_id), order_by=_member_order())
    inner = (
        select(
            period,
            Stance.label.label("label"),
            case((Stance.label == UNCLEAR, 1), else_=0).label("unclear"),
            case((and_(Stance.language != "en", Stance.encoder.is_not(None)), 1), else_=0).label("other"),
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
        func.coalesce(func.sum(inner.c.other), 0),
    ).group_by(inner.c.period, counted_as)
    counts: dict[int, dict[str, int]] = {}
    totals: dict[int, list[int]] = {}
    for i, label, replies, classified, unclear, members, other in await s.execute(grouped):
        key = int(i)
        if label is not None:
            counts.setdefault(key, {})[label] = counts.get(key, {}).get(label, 0) + (
                int(classified) if scope.every_reply else int(members)
            )
        total = totals.setdefault(key, [0, 0, 0, 0, 0])
        total[0] += int(replies)
        total[1] += int(members)
        total[2] += int(classified)
        total[3] += int(unclear)
        total[4] += int(other)
    return counts, {k: (v[0], v[1], v[2], v[3], v[4]) for k, v in totals.items()}


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
