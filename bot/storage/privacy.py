"""Privacy and export storage: moderators' exports, opt-outs, forget-me, a member's data and the retention purge."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, update

from bot.core.export import ExportRow
from bot.storage.base import Store
from bot.storage.models import (
    AuditEntry,
    DeclaredStance,
    OptOut,
    PromptPost,
    PromptRow,
    Reply,
    ReviewItem,
    Stance,
    utcnow,
)
from bot.storage.prompts import require_prompt_row
from bot.storage.rules import author_counted, is_opted_out, recount_everywhere
from bot.storage.schedules import forget_creator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForgetReport:
    """What ``/stance forget-me`` removed (counts only) and the review messages to delete from Discord."""

    replies: int
    stances: int
    declared: int
    guild_ids: tuple[int, ...]
    review_messages: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PurgeReport:
    """What a retention purge did: replies whose text was removed, review messages to delete from Discord."""

    replies: int
    review_messages: tuple[tuple[int, int], ...]


def _locations(rows: Iterable[tuple[int | None, int | None]]) -> tuple[tuple[int, int], ...]:
    """``(channel id, message id)`` pairs of the rows that have both."""
    return tuple((c, m) for c, m in rows if c is not None and m is not None)


class Privacy(Store):
    """Exports, opt-outs, forgetting a member, a member's data and purging old text; every method is one
    transaction."""

    # -- export -------------------------------------------------------------------------------------------------

    async def export_rows(self, slug: str, guild_id: int) -> list[ExportRow]:
        """A prompt's live replies in a guild with their current stances (opted-out members left out)."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            rows = await s.execute(
                select(Reply, Stance)
                .outerjoin(Stance, and_(Stance.reply_id == Reply.id, Stance.is_current))
                .where(
                    Reply.prompt_id == prow.id,
                    Reply.guild_id == guild_id,
                    Reply.deleted_at.is_(None),
                    author_counted(),
                )
                .order_by(Reply.created_at, Reply.id)
            )
            return [
                ExportRow(
                    prow.slug,
                    r.guild_id,
                    r.message_id,
                    r.author_id,
                    r.created_at,
                    r.edited_at,
                    r.content,
                    st.label if st else None,
                    st.confidence if st else None,
                    st.source if st else None,
                    st.model_version if st else None,
                    bool(st and st.counted),
                    st.language if st else None,
                    st.encoder if st else None,
                )
                for r, st in rows
            ]

    # -- privacy ------------------------------------------------------------------------------------------------

    async def is_opted_out(self, guild_id: int, user_id: int) -> bool:
        """Whether the member asked not to be counted in this guild."""
        async with self.transaction() as s:
            return await is_opted_out(s, guild_id, user_id)

    async def opt_out(self, guild_id: int, user_id: int) -> bool:
        """Stop counting a member in a guild: their stances stop counting, declared stances and open reviews go,
        and new replies are not stored. ``False`` when they had opted out already."""
        async with self.transaction() as s:
            if await is_opted_out(s, guild_id, user_id):
                return False
            s.add(OptOut(guild_id=guild_id, user_id=user_id))
            await s.execute(
                delete(DeclaredStance).where(DeclaredStance.guild_id == guild_id, DeclaredStance.author_id == user_id)
            )
            mine = select(Reply.id).where(Reply.guild_id == guild_id, Reply.author_id == user_id)
            await s.execute(
                update(ReviewItem)
                .where(ReviewItem.reply_id.in_(mine), ReviewItem.status == "open")
                .values(status="closed", resolved_at=utcnow())
            )
            await s.flush()
            await recount_everywhere(s, guild_id, user_id, self.db.rules)
            s.add(AuditEntry(guild_id=guild_id, action="opt_out", subject_id=user_id))
            return True

    async def opt_in(self, guild_id: int, user_id: int) -> bool:
        """Count a member again (their stored replies count again). ``False`` when they had not opted out."""
        async with self.transaction() as s:
            row = await s.get(OptOut, (guild_id, user_id))
            if row is None:
                return False
            await s.delete(row)
            await s.flush()
            await recount_everywhere(s, guild_id, user_id, self.db.rules)
            s.add(AuditEntry(guild_id=guild_id, action="opt_in", subject_id=user_id))
            return True

    async def forget_member(self, user_id: int) -> ForgetReport:
        """Remove everything stored about a member in every guild: replies, stances, declared stances and review
        items; their id and message ids are removed from the audit log, which keeps one anonymous ``forget`` row
        per guild with the counts. Opt-outs stay, so the member keeps not being counted."""
        async with self.transaction() as s:
            mine = select(Reply.id).where(Reply.author_id == user_id)
            per_guild: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
            for gid, n in await s.execute(
                select(Reply.guild_id, func.count()).where(Reply.author_id == user_id).group_by(Reply.guild_id)
            ):
                per_guild[gid][0] = int(n)
            for gid, n in await s.execute(
                select(Stance.guild_id, func.count()).where(Stance.author_id == user_id).group_by(Stance.guild_id)
            ):
                per_guild[gid][1] = int(n)
            for gid, n in await s.execute(
                select(DeclaredStance.guild_id, func.count())
                .where(DeclaredStance.author_id == user_id)
                .group_by(DeclaredStance.guild_id)
            ):
                per_guild[gid][2] = int(n)
            review_messages = _locations(
                await s.execute(
                    select(ReviewItem.channel_id, ReviewItem.message_id).where(
                        ReviewItem.reply_id.in_(mine), ReviewItem.message_id.is_not(None)
                    )
                )
            )
            await s.execute(delete(ReviewItem).where(ReviewItem.reply_id.in_(mine)))
            await s.execute(
                update(AuditEntry)
                .where(AuditEntry.subject_id == user_id)
                .values(subject_id=None, message_id=None, channel_id=None, reply_id=None)
            )
            await s.execute(update(AuditEntry).where(AuditEntry.actor_id == user_id).values(actor_id=None))
            await s.execute(delete(Stance).where(Stance.author_id == user_id))
            await s.execute(delete(Reply).where(Reply.author_id == user_id))
            await s.execute(delete(DeclaredStance).where(DeclaredStance.author_id == user_id))
            await s.execute(update(PromptPost).where(PromptPost.posted_by == user_id).values(posted_by=None))
            await forget_creator(s, user_id)
            for gid, (replies, stances, declared) in sorted(per_guild.items()):
                detail = f"a member was forgotten: {replies} replies, {stances} stances, {declared} declared"
                s.add(AuditEntry(guild_id=gid, action="forget", detail=detail))
            totals = [sum(v[i] for v in per_guild.values()) for i in range(3)]
            return ForgetReport(totals[0], totals[1], totals[2], tuple(sorted(per_guild)), review_messages)

    async def member_data(self, user_id: int) -> dict[str, Any]:
        """Everything stored about a member, as plain data (for ``/stance mydata``)."""
        async with self.transaction() as s:
            replies: list[dict[str, Any]] = []
            stances: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for st in await s.scalars(
                select(Stance).where(Stance.author_id == user_id).order_by(Stance.created_at, Stance.id)
            ):
                stances[st.reply_id].append(
                    {
                        "label": st.label,
                        "confidence": round(st.confidence, 4),
                        "set_by": st.source,
                        "model_version": st.model_version,
                        "language": st.language,
                        "encoder": st.encoder,
                        "reason": st.reason,
                        "current": st.is_current,
                        "counted": st.counted,
                        "at": st.created_at,
                    }
                )
            for r, slug in await s.execute(
                select(Reply, PromptRow.slug)
                .join(PromptRow, PromptRow.id == Reply.prompt_id)
                .where(Reply.author_id == user_id)
                .order_by(Reply.created_at, Reply.id)
            ):
                replies.append(
                    {
                        "guild_id": str(r.guild_id),
                        "prompt": slug,
                        "thread_id": str(r.channel_id),
                        "message_id": str(r.message_id),
                        "written_at": r.created_at,
                        "edited_at": r.edited_at,
                        "deleted_at": r.deleted_at,
                        "text": r.content,
                        "stances": stances.get(r.id, []),
                    }
                )
            declared = [
                {
                    "guild_id": str(d.guild_id),
                    "prompt": slug,
                    "label": d.label,
                    "counted": d.counted,
                    "declared_at": d.declared_at,
                }
                for d, slug in await s.execute(
                    select(DeclaredStance, PromptRow.slug)
                    .join(PromptRow, PromptRow.id == DeclaredStance.prompt_id)
                    .where(DeclaredStance.author_id == user_id)
                )
            ]
            audit = [
                {
                    "guild_id": str(a.guild_id),
                    "action": a.action,
                    "prompt": slug,
                    "from": a.from_label,
                    "to": a.to_label,
                    "at": a.created_at,
                }
                for a, slug in await s.execute(
                    select(AuditEntry, PromptRow.slug)
                    .outerjoin(PromptRow, PromptRow.id == AuditEntry.prompt_id)
                    .where(AuditEntry.subject_id == user_id)
                    .order_by(AuditEntry.created_at)
                )
            ]
            opted = [str(o.guild_id) for o in await s.scalars(select(OptOut).where(OptOut.user_id == user_id))]
            actions = await s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.actor_id == user_id))
            return {
                "user_id": str(user_id),
                "generated_at": utcnow(),
                "opted_out_in_guilds": opted,
                "replies": replies,
                "declared_stances": declared,
                "audit_entries_about_you": audit,
                "moderator_actions_by_you": int(actions or 0),
            }

    async def purge_text(self, before: datetime, *, limit: int = 1000) -> PurgeReport:
        """Remove the text of up to ``limit`` classified replies written before ``before`` (stances and counts
        stay); open review items of those replies are closed, since there is nothing left to judge. Call again
        while it reports ``limit`` replies."""
        async with self.transaction() as s:
            old = and_(Reply.created_at < before, Reply.content.is_not(None), Reply.status != "pending")
            ids = list(await s.scalars(select(Reply.id).where(old).order_by(Reply.id).limit(limit)))
            if not ids:
                return PurgeReport(0, ())
            review_messages = _locations(
                await s.execute(
                    select(ReviewItem.channel_id, ReviewItem.message_id).where(
                        ReviewItem.reply_id.in_(ids), ReviewItem.status == "open", ReviewItem.message_id.is_not(None)
                    )
                )
            )
            await s.execute(
                update(ReviewItem)
                .where(ReviewItem.reply_id.in_(ids), ReviewItem.status == "open")
                .values(status="closed", resolved_at=utcnow())
            )
            await s.execute(update(Reply).where(Reply.id.in_(ids)).values(content=None))
            s.add(AuditEntry(action="purge", detail=f"text of {len(ids)} replies written before {before:%Y-%m-%d}"))
            return PurgeReport(len(ids), review_messages)
