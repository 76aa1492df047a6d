"""Moderation storage: corrections with their audit log, and the review queue."""

from __future__ import annotations

import logging

from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.errors import LabelError
from bot.core.export import Correction
from bot.core.moderation import AuditRecord
from bot.core.prompts import UNCLEAR, prompt_from_dict
from bot.core.stance import StanceResult
from bot.storage.base import Store
from bot.storage.models import AuditEntry, PromptRow, Reply, ReviewItem, Stance, utcnow
from bot.storage.records import MODERATOR, NotAReplyError, ReviewDoneError, ReviewInfo
from bot.storage.rules import add_stances, author_counted, recount, stance_row

log = logging.getLogger(__name__)


class Moderation(Store):
    """Relabels, the audit log and the review queue; every method is one transaction."""

    # -- corrections and the audit log --------------------------------------------------------------------------

    async def relabel(
        self, message_id: int, *, guild_id: int, label: str, actor_id: int, action: str = "relabel"
    ) -> AuditRecord:
        """A moderator sets a reply's stance by hand; records the change in the audit log and resolves any open
        review of the reply."""
        async with self.transaction() as s:
            reply = await s.scalar(select(Reply).where(Reply.message_id == message_id))
            if reply is None or reply.guild_id != guild_id:
                raise NotAReplyError("That message is not a reply Stancebot has stored in this server.")
            if reply.deleted_at is not None:
                raise NotAReplyError("That reply was deleted; there is nothing to relabel.")
            return await self._relabel(s, reply, label=label, actor_id=actor_id, action=action)

    async def _relabel(self, s: AsyncSession, reply: Reply, *, label: str, actor_id: int, action: str) -> AuditRecord:
        prow = await s.get(PromptRow, reply.prompt_id)
        assert prow is not None
        prompt = prompt_from_dict(prow.definition)
        if label not in prompt.label_names:
            raise LabelError(
                f"{label!r} is not a stance of prompt {prompt.id!r}; use one of {', '.join(prompt.label_names)}."
            )
        before = await s.scalar(select(Stance.label).where(Stance.reply_id == reply.id, Stance.is_current))
        member = (reply.prompt_id, reply.guild_id, reply.author_id)
        row = stance_row(
            reply.id, member, StanceResult(label, 1.0), model_version=MODERATOR, source=MODERATOR, now=utcnow()
        )
        await add_stances(s, [row])
        reply.status = "classified"
        await recount(s, [member], self.db.rules)
        await s.execute(
            update(ReviewItem)
            .where(ReviewItem.reply_id == reply.id, ReviewItem.status == "open")
            .values(status="done", resolved_by=actor_id, resolved_at=utcnow())
        )
        entry = AuditEntry(
            guild_id=reply.guild_id,
            action=action,
            prompt_id=reply.prompt_id,
            reply_id=reply.id,
            message_id=reply.message_id,
            channel_id=reply.channel_id,
            subject_id=reply.author_id,
            actor_id=actor_id,
            from_label=before,
            to_label=label,
        )
        s.add(entry)
        await s.flush()
        return self._audit_record(entry, prow.slug)

    @staticmethod
    def _audit_record(entry: AuditEntry, slug: str | None) -> AuditRecord:
        return AuditRecord(
            entry.id,
            entry.guild_id,
            entry.action,
            slug,
            entry.message_id,
            entry.channel_id,
            entry.subject_id,
            entry.actor_id,
            entry.from_label,
            entry.to_label,
            entry.detail,
            entry.created_at,
        )

    async def audit_recent(self, guild_id: int, limit: int = 10) -> list[AuditRecord]:
        """The guild's latest audit entries, newest first."""
        async with self.transaction() as s:
            rows = await s.execute(
                select(AuditEntry, PromptRow.slug)
                .outerjoin(PromptRow, PromptRow.id == AuditEntry.prompt_id)
                .where(AuditEntry.guild_id == guild_id)
                .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
                .limit(limit)
            )
            return [self._audit_record(entry, slug) for entry, slug in rows]

    async def corrections(self, slug: str | None = None) -> list[Correction]:
        """Replies whose current stance a moderator set, with their text: training data for ``stancebot train``."""
        async with self.transaction() as s:
            q = (
                select(Reply.content, Stance.label, PromptRow.slug)
                .join(Stance, and_(Stance.reply_id == Reply.id, Stance.is_current))
                .join(PromptRow, PromptRow.id == Reply.prompt_id)
                .where(
                    Stance.source == MODERATOR,
                    Reply.deleted_at.is_(None),
                    Reply.content.is_not(None),
                    author_counted(),
                )
                .order_by(Reply.id)
            )
            if slug is not None:
                q = q.where(PromptRow.slug == slug)
            return [Correction(content, label, pslug) for content, label, pslug in await s.execute(q) if content]

    # -- the review queue ---------------------------------------------------------------------------------------

    def _review_query(self) -> Select[ReviewItem, Reply, PromptRow]:
        return (
            select(ReviewItem, Reply, PromptRow)
            .join(Reply, Reply.id == ReviewItem.reply_id)
            .join(PromptRow, PromptRow.id == ReviewItem.prompt_id)
        )

    @staticmethod
    def _review_info(item: ReviewItem, reply: Reply, prow: PromptRow) -> ReviewInfo:
        labels = tuple(label["name"] for label in prow.definition.get("labels", []))
        if UNCLEAR not in labels:
            labels = (*labels, UNCLEAR)
        return ReviewInfo(
            item.id,
            reply.id,
            item.guild_id,
            prow.slug,
            labels,
            reply.message_id,
            reply.channel_id,
            reply.author_id,
            reply.content,
            item.model_label,
            item.confidence,
            item.status,
            item.channel_id,
            item.message_id,
            item.resolved_by,
        )

    async def next_review(self, guild_id: int, slug: str | None = None) -> ReviewInfo | None:
        """The oldest open review item of the guild (optionally of one prompt)."""
        async with self.transaction() as s:
            q = self._review_query().where(
                ReviewItem.guild_id == guild_id, ReviewItem.status == "open", Reply.deleted_at.is_(None)
            )
            if slug is not None:
                q = q.where(PromptRow.slug == slug)
            row = (await s.execute(q.order_by(ReviewItem.created_at, ReviewItem.id).limit(1))).first()
            return None if row is None else self._review_info(*row)

    async def review_queue_size(self, guild_id: int) -> int:
        """How many review items are open in the guild."""
        async with self.transaction() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(ReviewItem)
                .where(ReviewItem.guild_id == guild_id, ReviewItem.status == "open")
            )
            return int(n or 0)

    async def review_item(self, item_id: int) -> ReviewInfo | None:
        """One review item, whatever its status."""
        async with self.transaction() as s:
            row = (await s.execute(self._review_query().where(ReviewItem.id == item_id))).first()
            return None if row is None else self._review_info(*row)

    async def open_review_for_reply(self, reply_id: int) -> ReviewInfo | None:
        """The open review item of a reply, if it has one."""
        async with self.transaction() as s:
            row = (
                await s.execute(
                    self._review_query().where(ReviewItem.reply_id == reply_id, ReviewItem.status == "open")
                )
            ).first()
            return None if row is None else self._review_info(*row)

    async def set_review_message(self, item_id: int, channel_id: int, message_id: int) -> None:
        """Remember where a review item was posted."""
        async with self.transaction() as s:
            await s.execute(
                update(ReviewItem).where(ReviewItem.id == item_id).values(channel_id=channel_id, message_id=message_id)
            )

    async def _open_item(self, s: AsyncSession, item_id: int, guild_id: int) -> tuple[ReviewItem, Reply]:
        row = (
            await s.execute(
                select(ReviewItem, Reply).join(Reply, Reply.id == ReviewItem.reply_id).where(ReviewItem.id == item_id)
            )
        ).first()
        if row is None or row[0].guild_id != guild_id:
            raise ReviewDoneError("This review item no longer exists (the reply was removed).")
        item, reply = row
        if item.status != "open" or reply.deleted_at is not None:
            by = f" by <@{item.resolved_by}>" if item.resolved_by else ""
            raise ReviewDoneError(f"This reply was already handled{by} ({item.status}).")
        return item, reply

    async def resolve_review(self, item_id: int, *, guild_id: int, label: str, actor_id: int) -> AuditRecord:
        """A moderator picked a label for a review item: relabel the reply, record it, close the item."""
        async with self.transaction() as s:
            _item, reply = await self._open_item(s, item_id, guild_id)
            return await self._relabel(s, reply, label=label, actor_id=actor_id, action="review")

    async def skip_review(self, item_id: int, *, guild_id: int, actor_id: int) -> None:
        """A moderator skipped a review item: it leaves the queue, the model's stance stays."""
        async with self.transaction() as s:
            item, reply = await self._open_item(s, item_id, guild_id)
            item.status, item.resolved_by, item.resolved_at = "skipped", actor_id, utcnow()
            s.add(
                AuditEntry(
                    guild_id=guild_id,
                    action="review_skip",
                    prompt_id=item.prompt_id,
                    reply_id=reply.id,
                    message_id=reply.message_id,
                    channel_id=reply.channel_id,
                    subject_id=reply.author_id,
                    actor_id=actor_id,
                )
            )
