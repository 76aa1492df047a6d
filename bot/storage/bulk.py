"""Storing many already-classified replies at once (``stancebot analyze``): one transaction per batch.

Replies and their stances are inserted with two multi-row statements per batch; which stances count is then
recomputed once per member by the repository's own rule, so a bulk import tallies exactly like the live bot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from bot.core.periods import as_utc
from bot.core.stance import StanceResult
from bot.storage.db import insert_for
from bot.storage.models import Reply, Stance, utcnow
from bot.storage.repository import PostInfo, Repository, StoredStance


@dataclass(frozen=True)
class ClassifiedReply:
    """A reply from an export, with the stance the model gave it."""

    message_id: int
    author_id: int
    content: str
    created_at: datetime
    result: StanceResult


async def store_classified(
    repo: Repository, post: PostInfo, replies: Sequence[ClassifiedReply], *, model_version: str
) -> set[int]:
    """Store replies not stored yet (by message id) with their stance; returns the authors of the new ones.

    Which stances count is not updated here: call :func:`recount` with the returned authors once all batches are
    in (one recount per member instead of one per batch).
    """
    if not replies:
        return set()
    async with repo.transaction() as s:
        stmt = (
            insert_for(s, Reply)
            .values(
                [
                    {
                        "message_id": r.message_id,
                        "post_id": post.id,
                        "prompt_id": post.prompt_row_id,
                        "guild_id": post.guild_id,
                        "channel_id": post.thread_id,
                        "author_id": r.author_id,
                        "content": r.content,
                        "created_at": as_utc(r.created_at),
                        "status": "classified",
                    }
                    for r in replies
                ]
            )
            .on_conflict_do_nothing(index_elements=["message_id"])
            .returning(Reply.id, Reply.message_id)
        )
        new = {int(message_id): int(reply_id) for reply_id, message_id in await s.execute(stmt)}
        if not new:
            return set()
        now = utcnow()
        await s.execute(
            insert_for(s, Stance).values(
                [
                    {
                        "reply_id": new[r.message_id],
                        "prompt_id": post.prompt_row_id,
                        "guild_id": post.guild_id,
                        "author_id": r.author_id,
                        "label": r.result.label,
                        "confidence": r.result.confidence,
                        "model_version": model_version[:120],
                        "reason": (r.result.reason or None) and r.result.reason[:200],
                        "source": "model",
                        "is_current": True,
                        "counted": False,
                        "created_at": now,
                    }
                    for r in replies
                    if r.message_id in new
                ]
            )
        )
        return {r.author_id for r in replies if r.message_id in new}


async def recount(repo: Repository, post: PostInfo, authors: Iterable[int], *, per_transaction: int = 500) -> int:
    """Apply the repository's counting rule (not a copy of it) to these members; returns how many were done."""
    ordered = sorted(set(authors))
    for start in range(0, len(ordered), per_transaction):
        async with repo.transaction() as s:
            for author_id in ordered[start : start + per_transaction]:
                await repo.recount_member(s, post.prompt_row_id, post.guild_id, author_id)
    return len(ordered)


async def current_stances(repo: Repository, post: PostInfo) -> dict[int, StoredStance]:
    """The current stance of every reply in a post's thread, by message id."""
    async with repo.transaction() as s:
        rows = await s.execute(
            select(Stance, Reply.message_id)
            .join(Reply, Reply.id == Stance.reply_id)
            .where(Reply.post_id == post.id, Stance.is_current)
        )
        return {
            int(mid): StoredStance(
                int(mid), st.label, st.confidence, st.model_version, st.reason, st.source, st.counted
            )
            for st, mid in rows
        }
