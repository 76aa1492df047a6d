"""Learning from the server, stored: a prompt's labelled replies, the heads trained on them (per guild), and
re-classifying a prompt's open replies with the model that serves it now."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update

from bot.core.adapt import PromptHead
from bot.core.learning import DECLARED, RELABEL, REVIEW, LabelledReply
from bot.core.moderation import AuditRecord
from bot.core.periods import as_utc
from bot.core.stance import StanceResult
from bot.storage.base import Store
from bot.storage.models import (
    AuditEntry,
    DeclaredStance,
    PromptHeadRow,
    PromptPost,
    PromptRow,
    Reply,
    ReviewItem,
    Stance,
    utcnow,
)
from bot.storage.prompts import require_prompt_row
from bot.storage.records import MODERATOR
from bot.storage.rules import add_stances, among, author_counted, recount, stance_row, update_reviews

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadRecord:
    """A stored head of one prompt in one guild."""

    id: int
    guild_id: int
    slug: str
    version: str
    base_version: str
    n_labels: int
    head: str
    figures: dict[str, Any]
    active: bool
    seconds: float
    trained_at: datetime

    def prompt_head(self) -> PromptHead:
        """The head itself."""
        return PromptHead.from_json(self.head)


@dataclass(frozen=True)
class Reclassified:
    """What a re-classification did: replies it gave a new stance, and how many of those changed label."""

    replies: int
    changed: int


def _record(row: PromptHeadRow, slug: str) -> HeadRecord:
    return HeadRecord(
        row.id,
        row.guild_id,
        slug,
        row.version,
        row.base_version,
        row.n_labels,
        row.head,
        dict(row.figures),
        row.active,
        row.seconds,
        as_utc(row.trained_at),
    )


def _audit(entry: AuditEntry, slug: str) -> AuditRecord:
    return AuditRecord(
        entry.id,
        entry.guild_id,
        entry.action,
        slug,
        None,
        None,
        None,
        entry.actor_id,
        None,
        None,
        entry.detail,
        as_utc(entry.created_at),
    )


class Learning(Store):
    """Labels, heads and re-classification; every method is one transaction."""

    async def labelled_replies(self, guild_id: int, slug: str) -> list[LabelledReply]:
        """A prompt's replies in a guild that the server labelled, oldest label first: moderators' labels
        (relabels and review decisions) on their replies, and each member's declared stance on their latest
        reply (unless a moderator labelled that one). Deleted replies, replies without text and members who
        opted out are left out."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            base = and_(
                Reply.prompt_id == prow.id,
                Reply.guild_id == guild_id,
                Reply.deleted_at.is_(None),
                Reply.content.is_not(None),
                author_counted(),
            )
            reviewed = set(
                await s.scalars(
                    select(ReviewItem.reply_id).where(
                        ReviewItem.prompt_id == prow.id, ReviewItem.guild_id == guild_id, ReviewItem.status == "done"
                    )
                )
            )
            found: dict[int, LabelledReply] = {}
            moderated = await s.execute(
                select(Reply.id, Reply.content, Stance.label, Stance.created_at)
                .join(Stance, and_(Stance.reply_id == Reply.id, Stance.is_current))
                .where(base, Stance.source == MODERATOR)
            )
            for rid, content, label, at in moderated:
                found[rid] = LabelledReply(
                    rid, content or "", label, REVIEW if rid in reviewed else RELABEL, as_utc(at)
                )
            latest = (
                select(Reply.author_id, func.max(Reply.id).label("reply_id"))
                .where(base, Reply.content != "")
                .group_by(Reply.author_id)
                .subquery()
            )
            declared = await s.execute(
                select(latest.c.reply_id, Reply.content, DeclaredStance.label, DeclaredStance.declared_at)
                .select_from(DeclaredStance)
                .join(latest, latest.c.author_id == DeclaredStance.author_id)
                .join(Reply, Reply.id == latest.c.reply_id)
                .where(DeclaredStance.prompt_id == prow.id, DeclaredStance.guild_id == guild_id)
            )
            for rid, content, label, at in declared:
                if rid not in found:
                    found[rid] = LabelledReply(rid, content or "", label, DECLARED, as_utc(at))
            return sorted((r for r in found.values() if r.text), key=lambda r: (r.labelled_at, r.reply_id))

    async def latest_head(self, guild_id: int, slug: str) -> HeadRecord | None:
        """The prompt's most recently trained head in a guild, serving or not."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            row = await s.scalar(
                select(PromptHeadRow)
                .where(PromptHeadRow.guild_id == guild_id, PromptHeadRow.prompt_id == prow.id)
                .order_by(PromptHeadRow.trained_at.desc(), PromptHeadRow.id.desc())
                .limit(1)
            )
            return None if row is None else _record(row, slug)

    async def active_heads(self, guild_id: int | None = None) -> list[HeadRecord]:
        """The heads serving their prompts (in one guild, or everywhere)."""
        async with self.transaction() as s:
            q = (
                select(PromptHeadRow, PromptRow.slug)
                .join(PromptRow, PromptRow.id == PromptHeadRow.prompt_id)
                .where(PromptHeadRow.active)
            )
            if guild_id is not None:
                q = q.where(PromptHeadRow.guild_id == guild_id)
            return [_record(row, slug) for row, slug in await s.execute(q.order_by(PromptHeadRow.id))]

    async def active_head(self, guild_id: int, slug: str) -> HeadRecord | None:
        """The head serving a prompt in a guild, if one does."""
        return next((h for h in await self.active_heads(guild_id) if h.slug == slug), None)

    async def record_training(
        self, guild_id: int, slug: str, head: PromptHead, *, seconds: float, switch: bool, summary: str
    ) -> tuple[HeadRecord, AuditRecord]:
        """Store a trained head; with ``switch`` it becomes the one serving the prompt (the previous one stops).
        The audit log gets a ``model_switch`` or ``model_kept`` entry with the version and the figures (returned
        too, for the mod-log channel)."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            if switch:
                await s.execute(
                    update(PromptHeadRow)
                    .where(PromptHeadRow.guild_id == guild_id, PromptHeadRow.prompt_id == prow.id)
                    .values(active=False)
                )
            row = PromptHeadRow(
                guild_id=guild_id,
                prompt_id=prow.id,
                version=head.version[:120],
                base_version=head.base_version[:120],
                n_labels=head.n_labels,
                head=head.to_json(),
                figures=head.figures,
                active=switch,
                seconds=seconds,
                trained_at=utcnow(),
            )
            entry = AuditEntry(
                guild_id=guild_id,
                action="model_switch" if switch else "model_kept",
                prompt_id=prow.id,
                detail=f"{head.version}: {summary}"[:200],
                created_at=utcnow(),
            )
            s.add_all([row, entry])
            await s.flush()
            return _record(row, slug), _audit(entry, slug)

    async def deactivate(self, guild_id: int, slug: str) -> None:
        """No head serves the prompt any more (its labels changed, or its base did)."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            await s.execute(
                update(PromptHeadRow)
                .where(PromptHeadRow.guild_id == guild_id, PromptHeadRow.prompt_id == prow.id)
                .values(active=False)
            )

    # -- re-classification -------------------------------------------------------------------------------------

    async def open_model_replies(self, guild_id: int, slug: str) -> list[tuple[int, str]]:
        """``(reply id, text)`` of a prompt's replies in open posts of a guild whose stance the model gave (not a
        moderator), oldest first."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            rows = await s.execute(
                select(Reply.id, Reply.content)
                .join(PromptPost, PromptPost.id == Reply.post_id)
                .join(Stance, and_(Stance.reply_id == Reply.id, Stance.is_current))
                .where(
                    Reply.prompt_id == prow.id,
                    Reply.guild_id == guild_id,
                    PromptPost.closed_at.is_(None),
                    Reply.deleted_at.is_(None),
                    Reply.content.is_not(None),
                    Stance.source == "model",
                )
                .order_by(Reply.id)
            )
            return [(rid, content) for rid, content in rows if content]

    async def reclassify(
        self,
        guild_id: int,
        slug: str,
        results: Sequence[tuple[int, str, StanceResult]],
        *,
        model_version: str,
    ) -> Reclassified:
        """Give each ``(reply id, text it was classified from, result)`` its new model stance, unless the reply
        was edited, deleted or labelled by a moderator meanwhile; recount and update the review queue. (A command
        that re-classifies in several calls records them once: :meth:`record_reclassify`.)"""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            wanted = {rid: (text, result) for rid, text, result in results}
            current = await s.execute(
                select(Reply.id, Reply.content, Reply.author_id, Stance.label)
                .join(Stance, and_(Stance.reply_id == Reply.id, Stance.is_current))
                .where(
                    among(s, Reply.id, list(wanted)),
                    Reply.deleted_at.is_(None),
                    Stance.source == "model",
                )
            )
            now = utcnow()
            rows, reviews, members, changed = [], [], set(), 0
            for rid, content, author_id, label in current:
                text, result = wanted[rid]
                if content != text:
                    continue
                member = (prow.id, guild_id, author_id)
                rows.append(stance_row(rid, member, result, model_version=model_version, source="model", now=now))
                reviews.append((rid, member, result))
                members.add(member)
                changed += result.label != label
            await add_stances(s, rows)
            await update_reviews(s, reviews, below=self.db.review_below)
            await recount(s, members, self.db.rules)
            return Reclassified(len(rows), changed)

    async def record_reclassify(
        self, guild_id: int, slug: str, done: Reclassified, *, model_version: str, actor_id: int
    ) -> AuditRecord:
        """One ``reclassify`` audit entry for a moderator's re-classification of a prompt."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            entry = AuditEntry(
                guild_id=guild_id,
                action="reclassify",
                prompt_id=prow.id,
                actor_id=actor_id,
                detail=f"{done.replies} replies, {done.changed} changed, with {model_version}"[:200],
                created_at=utcnow(),
            )
            s.add(entry)
            await s.flush()
            return _audit(entry, slug)
