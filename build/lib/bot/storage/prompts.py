"""Prompts and their posts: seed prompts synced from files, the prompts each guild adds, and where each prompt was
posted (its thread, open or closed)."""

from __future__ import annotations

import logging
from collections import defaultdict

from sqlalchemy import Select, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.core.errors import PromptError, StorageError
from bot.core.prompts import Prompt, prompt_from_dict
from bot.storage.base import Store
from bot.storage.models import AuditEntry, DeclaredStance, PromptPost, PromptRow, Stance, utcnow
from bot.storage.records import PostInfo, PromptOverview, PromptState
from bot.storage.rules import ensure_guild

log = logging.getLogger(__name__)


async def prompt_row(s: AsyncSession, slug: str, guild_id: int) -> PromptRow | None:
    """The prompt called ``slug`` as a guild sees it: a seed prompt, else the guild's own."""
    rows = await s.scalars(
        select(PromptRow).where(PromptRow.slug == slug, PromptRow.guild_id.is_(None) | (PromptRow.guild_id == guild_id))
    )
    found = sorted(rows, key=lambda r: r.guild_id is not None)
    return found[0] if found else None


async def require_prompt_row(s: AsyncSession, slug: str, guild_id: int) -> PromptRow:
    """:func:`prompt_row`, or a :class:`PromptError` naming the prompt."""
    row = await prompt_row(s, slug, guild_id)
    if row is None:
        raise PromptError(f"Unknown prompt {slug!r} in this server.")
    return row


def post_query() -> Select[PromptPost, str]:
    """Posts with their prompt's slug."""
    return select(PromptPost, PromptRow.slug).join(PromptRow, PromptRow.id == PromptPost.prompt_id)


def post_info(post: PromptPost, slug: str) -> PostInfo:
    """A post as storage hands it out."""
    return PostInfo(
        post.id,
        post.prompt_id,
        slug,
        post.guild_id,
        post.channel_id,
        post.message_id,
        post.thread_id,
        post.closed_at is not None,
    )


class Prompts(Store):
    """Prompt definitions and posts; every method is one transaction."""

    async def sync_prompt(self, prompt: Prompt, guild_id: int | None = None) -> int:
        """Insert or update a prompt definition; returns its row id."""
        async with self.transaction() as s:
            row = await s.scalar(
                select(PromptRow).where(
                    PromptRow.slug == prompt.id,
                    PromptRow.guild_id.is_(None) if guild_id is None else PromptRow.guild_id == guild_id,
                )
            )
            if row is None:
                row = PromptRow(slug=prompt.id, guild_id=guild_id, status="open")
                s.add(row)
            row.title, row.question, row.summary = prompt.title, prompt.question, prompt.summary
            row.source, row.definition = prompt.source, prompt.to_dict()
            await s.flush()
            return row.id

    async def guild_added_prompts(self) -> list[tuple[Prompt, int]]:
        """Every prompt a guild added with ``/prompt add``, with its guild id (loaded into the catalog at start)."""
        async with self.transaction() as s:
            rows = await s.scalars(select(PromptRow).where(PromptRow.guild_id.is_not(None)).order_by(PromptRow.id))
            out = []
            for r in rows:
                assert r.guild_id is not None
                try:
                    out.append((prompt_from_dict(r.definition), r.guild_id))
                except PromptError as exc:
                    log.warning("Stored prompt %s of guild %s is invalid and skipped: %s", r.slug, r.guild_id, exc)
            return out

    async def add_guild_prompt(self, prompt: Prompt, guild_id: int, *, actor_id: int) -> int:
        """Store a prompt a guild's moderator added; its name must not be taken by a seed prompt or by another prompt
        of this guild (other guilds' prompts do not matter: each guild names its prompts freely)."""
        async with self.transaction() as s:
            taken = await s.scalar(
                select(func.count())
                .select_from(PromptRow)
                .where(PromptRow.slug == prompt.id, PromptRow.guild_id.is_(None) | (PromptRow.guild_id == guild_id))
            )
            if taken:
                raise PromptError(f"A prompt named {prompt.id!r} already exists; choose another name.")
            await ensure_guild(s, guild_id)
            row = PromptRow(
                slug=prompt.id,
                guild_id=guild_id,
                title=prompt.title,
                question=prompt.question,
                summary=prompt.summary,
                source=prompt.source,
                definition=prompt.to_dict(),
                status="open",
            )
            s.add(row)
            await s.flush()
            s.add(AuditEntry(guild_id=guild_id, action="prompt_add", prompt_id=row.id, actor_id=actor_id))
            return row.id

    async def prompt_state(self, slug: str, guild_id: int) -> PromptState:
        """``unposted`` (never posted in the guild), ``open`` (a post still counts) or ``closed``."""
        async with self.transaction() as s:
            prow = await prompt_row(s, slug, guild_id)
            if prow is None:
                return "unposted"
            return await self._state(s, prow.id, guild_id)

    async def _state(self, s: AsyncSession, prompt_row_id: int, guild_id: int) -> PromptState:
        posts = (
            await s.execute(
                select(func.count(), func.count(PromptPost.closed_at)).where(
                    PromptPost.prompt_id == prompt_row_id, PromptPost.guild_id == guild_id
                )
            )
        ).one()
        total, closed = int(posts[0]), int(posts[1])
        if total == 0:
            return "unposted"
        return "closed" if closed == total else "open"

    async def set_prompt_closed(self, slug: str, guild_id: int, *, closed: bool, actor_id: int) -> list[PostInfo]:
        """Close (stop counting, keep data) or reopen a prompt's posts in a guild; returns the changed posts."""
        async with self.transaction() as s:
            prow = await require_prompt_row(s, slug, guild_id)
            state = await self._state(s, prow.id, guild_id)
            if state == "unposted":
                raise PromptError(f"Prompt {slug!r} has not been posted in this server.")
            if closed and state == "closed":
                raise PromptError(f"Prompt {slug!r} is already closed here.")
            if not closed and state == "open":
                raise PromptError(f"Prompt {slug!r} is open here; there is nothing to reopen.")
            where = and_(PromptPost.prompt_id == prow.id, PromptPost.guild_id == guild_id)
            await s.execute(update(PromptPost).where(where).values(closed_at=utcnow() if closed else None))
            if prow.guild_id is not None:
                prow.status = "closed" if closed else "open"
            s.add(
                AuditEntry(
                    guild_id=guild_id,
                    action="prompt_close" if closed else "prompt_reopen",
                    prompt_id=prow.id,
                    actor_id=actor_id,
                )
            )
            rows = await s.execute(post_query().where(where))
            return [post_info(r[0], r[1]) for r in rows]

    async def prompt_overview(self, guild_id: int) -> list[PromptOverview]:
        """Every prompt the guild can use, with its state here, posts and counted stances."""
        async with self.transaction() as s:
            prows = list(
                await s.scalars(
                    select(PromptRow)
                    .where((PromptRow.guild_id.is_(None)) | (PromptRow.guild_id == guild_id))
                    .order_by(PromptRow.slug)
                )
            )
            posts = {
                pid: (int(n), int(c))
                for pid, n, c in await s.execute(
                    select(PromptPost.prompt_id, func.count(), func.count(PromptPost.closed_at))
                    .where(PromptPost.guild_id == guild_id)
                    .group_by(PromptPost.prompt_id)
                )
            }
            counted = await self._counted_per_prompt(s, guild_id)
            out = []
            for r in prows:
                n, c = posts.get(r.id, (0, 0))
                state: PromptState = "unposted" if n == 0 else ("closed" if c == n else "open")
                out.append(PromptOverview(r.slug, r.title, r.guild_id is not None, state, n, counted.get(r.id, 0)))
            return out

    async def _counted_per_prompt(self, s: AsyncSession, guild_id: int) -> dict[int, int]:
        totals: dict[int, int] = defaultdict(int)
        for table in (Stance, DeclaredStance):
            rows = await s.execute(
                select(table.prompt_id, func.count())
                .where(table.guild_id == guild_id, table.counted)
                .group_by(table.prompt_id)
            )
            for pid, n in rows:
                totals[pid] += int(n)
        return dict(totals)

    # -- posts --------------------------------------------------------------------------------------------------

    async def record_post(
        self,
        prompt_slug: str,
        *,
        guild_id: int,
        channel_id: int,
        message_id: int,
        thread_id: int,
        posted_by: int | None,
    ) -> PostInfo:
        """Remember that a prompt was posted and where its thread is."""
        async with self.transaction() as s:
            prow = await prompt_row(s, prompt_slug, guild_id)
            if prow is None:
                raise StorageError(f"Prompt {prompt_slug!r} is not in the database.")
            post = PromptPost(
                prompt_id=prow.id,
                guild_id=guild_id,
                channel_id=channel_id,
                message_id=message_id,
                thread_id=thread_id,
                posted_by=posted_by,
            )
            s.add(post)
            await s.flush()
            return PostInfo(post.id, prow.id, prow.slug, guild_id, channel_id, message_id, thread_id, False)

    async def post_for_thread(self, thread_id: int) -> PostInfo | None:
        """The prompt post whose thread this is, if any."""
        async with self.transaction() as s:
            row = (await s.execute(post_query().where(PromptPost.thread_id == thread_id))).first()
            return None if row is None else post_info(row[0], row[1])

    async def latest_open_post(self, slug: str, guild_id: int) -> PostInfo | None:
        """The newest post of a prompt in a guild that still counts replies."""
        async with self.transaction() as s:
            prow = await prompt_row(s, slug, guild_id)
            if prow is None:
                return None
            row = (
                await s.execute(
                    post_query()
                    .where(
                        PromptPost.prompt_id == prow.id,
                        PromptPost.guild_id == guild_id,
                        PromptPost.closed_at.is_(None),
                    )
                    .order_by(PromptPost.posted_at.desc(), PromptPost.id.desc())
                    .limit(1)
                )
            ).first()
            return None if row is None else post_info(row[0], row[1])

    async def open_posts(self) -> list[PostInfo]:
        """Every posted prompt thread that still counts replies."""
        async with self.transaction() as s:
            rows = await s.execute(post_query().where(PromptPost.closed_at.is_(None)))
            return [post_info(r[0], r[1]) for r in rows]
