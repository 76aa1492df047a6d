"""The one write path for replies and stances: :class:`Writes` stores many replies, or many stances, in one
transaction with a fixed number of statements, so a batch of 200 costs one commit instead of 200; a single write is
a batch of one. Every write applies the rules of :mod:`bot.storage.rules`.

Exactly once: a reply is inserted with ``ON CONFLICT (message_id) DO NOTHING``; a model stance is saved only while
its reply is still ``pending`` with the text that was classified, so a retried or duplicated classification never
adds a second stance, and a stale one (the reply was edited, deleted or relabelled meanwhile) is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TypeVar

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.errors import LabelError, PromptError, StorageError
from bot.core.prompts import UNCLEAR, prompt_from_dict
from bot.core.stance import StanceResult
from bot.core.text import storage_forms, well_formed
from bot.storage.base import Store
from bot.storage.models import DeclaredStance, PromptPost, PromptRow, Reply, ReviewItem, utcnow
from bot.storage.records import (
    DeclareResult,
    Member,
    NewReply,
    OptedOutError,
    PostInfo,
    PromptClosedError,
    ReplyRef,
    StanceWrite,
)
from bot.storage.rules import (
    DATABASE_ERRORS,
    add_stances,
    among,
    insert_replies,
    is_opted_out,
    lock_members,
    pg,
    recount,
    stance_row,
    update_reviews,
)

__all__ = ["DATABASE_ERRORS", "Writes"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _ref(item: NewReply, inserted: dict[int, int]) -> ReplyRef | None:
    """The stored reply ``item`` became (taken out of ``inserted``: a second one with its id gets ``None``)."""
    reply_id = inserted.pop(item.message_id, None)
    if reply_id is None:
        return None
    return ReplyRef(reply_id, item.message_id, item.post.prompt_slug, item.post.guild_id, item.author_id, item.content)


class Writes(Store):
    """Replies, model stances, edits, deletions and declared stances: batched, each method one transaction."""

    def _tx(self) -> AbstractAsyncContextManager[AsyncSession]:
        # The pipeline retries (and counts) every database error; none is logged here.
        return self.db.transaction(errors=DATABASE_ERRORS, log_errors=False)

    async def ping(self) -> None:
        """Raise :class:`StorageError` unless the database answers."""
        async with self._tx() as s:
            await s.execute(text("SELECT 1"))

    # -- replies ----------------------------------------------------------------------------------------------

    async def add_replies(self, items: Sequence[NewReply]) -> list[ReplyRef | None]:
        """Store each reply once, as ``pending``; ``None`` for a message id already stored (also earlier in the
        batch) and for authors who opted out in that guild (their text is not stored at all).

        A batch the database refuses while it answers is stored reply by reply, each in the first of its text's
        :func:`~bot.core.text.storage_forms` the database holds; :class:`StorageError` means it is down.
        """
        if not items:
            return []
        try:
            async with self._tx() as s:
                inserted = await insert_replies(s, items)
        except StorageError:
            await self.ping()
            return [await self._held(item.content, item.message_id, partial(self._add_one, item)) for item in items]
        return [_ref(item, inserted) for item in items]

    async def _add_one(self, item: NewReply, content: str) -> ReplyRef | None:
        stored = replace(item, content=content)
        async with self._tx() as s:
            inserted = await insert_replies(s, [stored])
        return _ref(stored, inserted)

    async def _held(self, content: str, message_id: int, write: Callable[[str], Awaitable[T]]) -> T | None:
        """``write`` with each storage form of ``content`` until the database holds one; ``None`` when it refuses
        them all while it answers (logged: that is not about the text). Raises :class:`StorageError` if it is down."""
        for number, form in enumerate(storage_forms(content)):
            try:
                result = await write(form)
            except StorageError:
                await self.ping()
                continue
            if number:
                log.warning("Reply %s: the database refused its text as written; stored it in a safe form", message_id)
            return result
        log.error("Reply %s was refused by the database in every form of its text; not stored", message_id)
        return None

    async def edit_reply(self, message_id: int, content: str, edited_at: datetime) -> ReplyRef | None:
        """Store an edit; returns the reply to reclassify, or ``None`` if the message is not a stored reply, its
        text did not change, its prompt is closed here, or its author opted out. The text is stored like a new
        reply's (:meth:`add_replies`)."""
        try:
            return await self._edit(message_id, well_formed(content), edited_at)
        except StorageError:
            await self.ping()
        return await self._held(content, message_id, lambda form: self._edit(message_id, form, edited_at))

    async def _edit(self, message_id: int, content: str, edited_at: datetime) -> ReplyRef | None:
        async with self._tx() as s:
            row = (
                await s.execute(
                    select(Reply, PromptPost.closed_at, PromptRow.slug)
                    .join(PromptPost, PromptPost.id == Reply.post_id)
                    .join(PromptRow, PromptRow.id == Reply.prompt_id)
                    .where(Reply.message_id == message_id, Reply.deleted_at.is_(None))
                )
            ).first()
            if row is None:
                return None
            reply, closed_at, slug = row
            if reply.content == content or closed_at is not None:
                return None
            if await is_opted_out(s, reply.guild_id, reply.author_id):
                return None
            reply.content, reply.edited_at, reply.status = content, edited_at, "pending"
            return ReplyRef(reply.id, message_id, slug, reply.guild_id, reply.author_id, content)

    async def delete_reply(self, message_id: int) -> bool:
        """Retract a deleted message from the tally (the row stays, marked deleted, its text removed)."""
        async with self.transaction() as s:
            reply = await s.scalar(select(Reply).where(Reply.message_id == message_id, Reply.deleted_at.is_(None)))
            if reply is None:
                return False
            reply.deleted_at, reply.content = utcnow(), None
            await s.execute(
                update(ReviewItem)
                .where(ReviewItem.reply_id == reply.id, ReviewItem.status == "open")
                .values(status="closed", resolved_at=utcnow())
            )
            await s.flush()
            await recount(s, {(reply.prompt_id, reply.guild_id, reply.author_id)}, self.db.rules)
            return True

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
            return [ReplyRef(r.id, r.message_id, r.slug, r.guild_id, r.author_id, r.content or "") for r in rows]

    async def last_message_ids(self, thread_ids: Iterable[int]) -> dict[int, int]:
        """The newest stored reply's message id in each of these threads (threads without replies are left out)."""
        ids = list(thread_ids)
        if not ids:
            return {}
        async with self._tx() as s:
            rows = await s.execute(
                select(Reply.channel_id, func.max(Reply.message_id))
                .where(among(s, Reply.channel_id, ids))
                .group_by(Reply.channel_id)
            )
            return {int(channel): int(message) for channel, message in rows}

    async def known_message_ids(self, message_ids: Iterable[int]) -> set[int]:
        """Which of these message ids are stored as replies."""
        ids = list(message_ids)
        if not ids:
            return set()
        async with self._tx() as s:
            return set(await s.scalars(select(Reply.message_id).where(among(s, Reply.message_id, ids))))

    # -- stances ----------------------------------------------------------------------------------------------

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
            ).where(among(s, Reply.id, ids))
            if pg(s):
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
            now = utcnow()
            rows = [
                stance_row(w.reply.id, member, w.result, model_version=w.model_version, source="model", now=now)
                for w, member in chosen
            ]
            await add_stances(s, rows)
            await s.execute(
                update(Reply)
                .where(among(s, Reply.id, [w.reply.id for w, _ in chosen]))
                .values(status="classified")
                .execution_options(synchronize_session=False)
            )
            await update_reviews(s, [(w.reply.id, m, w.result) for w, m in chosen], below=self.db.review_below)
            await recount(s, {member for _, member in chosen}, self.db.rules)
        return saved

    async def store_classified(
        self, post: PostInfo, replies: Sequence[tuple[NewReply, StanceResult]], *, model_version: str
    ) -> set[int]:
        """Store replies already classified (``stancebot analyze``) not stored yet, with their stances; returns the
        authors of the new ones. Which stances count is left to :meth:`recount_authors`, called once all batches
        are in (one recount per member instead of one per batch). Text the database refuses is stored as in
        :meth:`add_replies`."""
        if not replies:
            return set()
        try:
            return await self._store_classified(post, replies, model_version)
        except StorageError:
            await self.ping()
        authors: set[int] = set()
        for item, result in replies:

            async def one(form: str, item: NewReply = item, result: StanceResult = result) -> set[int]:
                return await self._store_classified(post, [(replace(item, content=form), result)], model_version)

            authors |= await self._held(item.content, item.message_id, one) or set()
        return authors

    async def _store_classified(
        self, post: PostInfo, replies: Sequence[tuple[NewReply, StanceResult]], model_version: str
    ) -> set[int]:
        async with self.transaction() as s:
            inserted = await insert_replies(s, [item for item, _ in replies], status="classified")
            now = utcnow()
            rows = [
                stance_row(
                    inserted[item.message_id],
                    (post.prompt_row_id, post.guild_id, item.author_id),
                    result,
                    model_version=model_version,
                    source="model",
                    now=now,
                )
                for item, result in replies
                if item.message_id in inserted
            ]
            await add_stances(s, rows)
            return {item.author_id for item, _ in replies if item.message_id in inserted}

    async def recount_authors(self, post: PostInfo, authors: Iterable[int], *, per_transaction: int = 500) -> int:
        """Apply the counting rules to these members of a post's prompt; returns how many were done."""
        ordered = sorted(set(authors))
        for start in range(0, len(ordered), per_transaction):
            async with self.transaction() as s:
                members = {(post.prompt_row_id, post.guild_id, a) for a in ordered[start : start + per_transaction]}
                await recount(s, members, self.db.rules)
        return len(ordered)

    # -- declared stances -------------------------------------------------------------------------------------

    async def declare(self, prompt_message_id: int, *, author_id: int, label: str) -> DeclareResult:
        """A member pressed a stance button on a prompt message: declare ``label``, or withdraw it if it was
        already their declaration. Refused when the prompt is closed or the member opted out."""
        async with self.transaction() as s:
            row = (
                await s.execute(
                    select(PromptPost, PromptRow)
                    .join(PromptRow, PromptRow.id == PromptPost.prompt_id)
                    .where(PromptPost.message_id == prompt_message_id)
                )
            ).first()
            if row is None:
                raise PromptError("This prompt message is not one Stancebot posted (or it was removed).")
            post, prow = row
            if post.closed_at is not None:
                raise PromptClosedError(f"Prompt {prow.slug!r} is closed: stances are no longer counted.")
            if await is_opted_out(s, post.guild_id, author_id):
                raise OptedOutError("You opted out of being counted here; `/stance opt-in` to take part again.")
            prompt = prompt_from_dict(prow.definition)
            if label == UNCLEAR or label not in prompt.label_names:
                raise LabelError(f"{label!r} is not a stance of prompt {prompt.id!r}.")
            member = (post.prompt_id, post.guild_id, author_id)
            await lock_members(s, [member])
            current = await s.scalar(
                select(DeclaredStance).where(
                    DeclaredStance.prompt_id == post.prompt_id,
                    DeclaredStance.guild_id == post.guild_id,
                    DeclaredStance.author_id == author_id,
                )
            )
            previous = current.label if current is not None else None
            if current is not None and current.label == label:
                await s.delete(current)
                new: str | None = None
            elif current is not None:
                current.label, current.declared_at, new = label, utcnow(), label
            else:
                s.add(
                    DeclaredStance(prompt_id=post.prompt_id, guild_id=post.guild_id, author_id=author_id, label=label)
                )
                new = label
            await s.flush()
            await recount(s, [member], self.db.rules)
            counted = new is not None and self.db.rules.declared_overrides
            return DeclareResult(prow.slug, previous, new, counted, post.guild_id)
