"""The repository's core: guilds, prompts, posts, replies, stances and declared stances. Returns plain dataclasses,
never ORM objects.

Counting: ``stances.is_current`` marks a reply's latest stance; ``stances.counted`` and ``declared_stances.counted``
mark what the tally counts. Every write that can change what counts for a member (a new stance, an edit, a
deletion, a relabel, a declaration, an opt-out) re-applies :func:`bot.core.counting.count_member` to that one
member inside the same transaction, so a tally is a plain ``GROUP BY`` over the ``counted`` rows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, and_, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.core.counting import Comparison, CountingRules, LiveStance, count_member
from bot.core.errors import LabelError, PromptError, StancebotError, StorageError
from bot.core.moderation import needs_review, runner_up
from bot.core.prompts import UNCLEAR, Prompt, prompt_from_dict
from bot.core.stance import StanceResult
from bot.core.tally import Tally
from bot.storage.db import dialect_of, insert_for, transaction
from bot.storage.models import (
    AuditEntry,
    DeclaredStance,
    Guild,
    OptOut,
    PromptPost,
    PromptRow,
    Reply,
    ReviewItem,
    Stance,
    utcnow,
)

log = logging.getLogger(__name__)

CountMode = Literal["member", "reply"]
PromptState = Literal["unposted", "open", "closed"]

#: ``stances.source`` of a stance a moderator set (``/stance relabel`` or the review queue).
MODERATOR = "moderator"


class NotAReplyError(StancebotError):
    """The message is not a reply Stancebot stored (in this guild)."""


class PromptClosedError(StancebotError):
    """The prompt is closed in this guild: it no longer counts."""


class OptedOutError(StancebotError):
    """The member opted out of being counted."""


@dataclass(frozen=True)
class PostInfo:
    """A posted prompt thread."""

    id: int
    prompt_row_id: int
    prompt_slug: str
    guild_id: int
    channel_id: int
    message_id: int
    thread_id: int
    closed: bool


@dataclass(frozen=True)
class ReplyRef:
    """A stored reply, enough to classify it."""

    id: int
    message_id: int
    prompt_slug: str
    guild_id: int
    author_id: int
    content: str


@dataclass(frozen=True)
class StoredStance:
    """A reply's current stance as stored."""

    message_id: int
    label: str
    confidence: float
    model_version: str
    reason: str | None
    source: str
    counted: bool


@dataclass(frozen=True)
class PromptOverview:
    """A prompt as ``/prompt list`` shows it for one guild."""

    slug: str
    title: str
    guild_owned: bool
    state: PromptState
    posts: int
    counted: int


@dataclass(frozen=True)
class DeclareResult:
    """A member's declared stance before and after pressing a button (``None``: no declaration)."""

    prompt_slug: str
    previous: str | None
    current: str | None
    counted: bool


class RepositoryCore:
    """Guilds, prompts, posts, replies, stances and declared stances over one sessionmaker; every method is one
    transaction. :class:`bot.storage.repository.Repository` adds moderation and privacy."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        count_mode: CountMode = "member",
        declared_overrides: bool = True,
        review_below: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.rules = CountingRules(count_mode, declared_overrides)
        #: Model stances below this confidence go to the review queue (besides those the gate made ``unclear``).
        self.review_below = review_below

    @property
    def count_mode(self) -> CountMode:
        """``member`` (one stance per member) or ``reply`` (every reply counts)."""
        return self.rules.mode

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """One session in one transaction (a database that is down raises :class:`StorageError`)."""
        return transaction(self.sessions)

    # -- guilds and prompts -------------------------------------------------------------------------------------

    async def ensure_guild(self, guild_id: int, name: str = "") -> None:
        """Create the guild row if missing; keep its name current."""
        async with self.transaction() as s:
            await self._ensure_guild(s, guild_id, name)

    async def _ensure_guild(self, s: AsyncSession, guild_id: int, name: str | None = None) -> None:
        stmt = insert_for(s, Guild).values(id=guild_id, name=(name or "")[:100], created_at=utcnow())
        if name is None:
            await s.execute(stmt.on_conflict_do_nothing(index_elements=["id"]))
        else:
            await s.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={"name": name[:100]}))

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

    async def guild_prompts(self, guild_id: int) -> list[tuple[Prompt, str]]:
        """Prompts a guild can use (global and its own), with their status (``open``/``closed``)."""
        async with self.transaction() as s:
            rows = await s.scalars(
                select(PromptRow)
                .where((PromptRow.guild_id.is_(None)) | (PromptRow.guild_id == guild_id))
                .order_by(PromptRow.slug)
            )
            return [(prompt_from_dict(r.definition), r.status) for r in rows]

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
            await self._ensure_guild(s, guild_id)
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

    async def _prompt_row(self, s: AsyncSession, slug: str, guild_id: int) -> PromptRow | None:
        own = await s.scalar(select(PromptRow).where(PromptRow.slug == slug, PromptRow.guild_id == guild_id))
        if own is not None:
            return own
        return await s.scalar(select(PromptRow).where(PromptRow.slug == slug, PromptRow.guild_id.is_(None)))

    async def _require_prompt_row(self, s: AsyncSession, slug: str, guild_id: int) -> PromptRow:
        row = await self._prompt_row(s, slug, guild_id)
        if row is None:
            raise PromptError(f"Unknown prompt {slug!r} in this server.")
        return row

    async def prompt_state(self, slug: str, guild_id: int) -> PromptState:
        """``unposted`` (never posted in the guild), ``open`` (a post still counts) or ``closed``."""
        async with self.transaction() as s:
            prow = await self._prompt_row(s, slug, guild_id)
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
            prow = await self._require_prompt_row(s, slug, guild_id)
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
            rows = await s.execute(self._post_query().where(where))
            return [self._post_info(r[0], r[1]) for r in rows]

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
            prow = await self._prompt_row(s, prompt_slug, guild_id)
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

    def _post_query(self) -> Select[PromptPost, str]:
        return select(PromptPost, PromptRow.slug).join(PromptRow, PromptRow.id == PromptPost.prompt_id)

    @staticmethod
    def _post_info(post: PromptPost, slug: str) -> PostInfo:
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

    async def post_for_thread(self, thread_id: int) -> PostInfo | None:
        """The prompt post whose thread this is, if any."""
        async with self.transaction() as s:
            row = (await s.execute(self._post_query().where(PromptPost.thread_id == thread_id))).first()
            return None if row is None else self._post_info(row[0], row[1])

    async def post_for_message(self, message_id: int) -> PostInfo | None:
        """The prompt post whose prompt message (the one with the buttons) this is, if any."""
        async with self.transaction() as s:
            row = (await s.execute(self._post_query().where(PromptPost.message_id == message_id))).first()
            return None if row is None else self._post_info(row[0], row[1])

    async def latest_open_post(self, slug: str, guild_id: int) -> PostInfo | None:
        """The newest post of a prompt in a guild that still counts replies."""
        async with self.transaction() as s:
            prow = await self._prompt_row(s, slug, guild_id)
            if prow is None:
                return None
            row = (
                await s.execute(
                    self._post_query()
                    .where(
                        PromptPost.prompt_id == prow.id,
                        PromptPost.guild_id == guild_id,
                        PromptPost.closed_at.is_(None),
                    )
                    .order_by(PromptPost.posted_at.desc(), PromptPost.id.desc())
                    .limit(1)
                )
            ).first()
            return None if row is None else self._post_info(row[0], row[1])

    async def open_posts(self) -> list[PostInfo]:
        """Every posted prompt thread that still counts replies."""
        async with self.transaction() as s:
            rows = await s.execute(self._post_query().where(PromptPost.closed_at.is_(None)))
            return [self._post_info(r[0], r[1]) for r in rows]

    # -- replies and stances ------------------------------------------------------------------------------------

    async def _opted_out(self, s: AsyncSession, guild_id: int, user_id: int) -> bool:
        return await s.get(OptOut, (guild_id, user_id)) is not None

    async def add_reply(
        self, post: PostInfo, *, message_id: int, author_id: int, content: str, created_at: datetime
    ) -> ReplyRef | None:
        """Store a reply once; ``None`` when this message id is already stored (duplicate event) or the author
        opted out of being counted in this guild (their text is then not stored at all)."""
        async with self.transaction() as s:
            if await self._opted_out(s, post.guild_id, author_id):
                return None
            stmt = (
                insert_for(s, Reply)
                .values(
                    message_id=message_id,
                    post_id=post.id,
                    prompt_id=post.prompt_row_id,
                    guild_id=post.guild_id,
                    channel_id=post.thread_id,
                    author_id=author_id,
                    content=content,
                    created_at=created_at,
                    status="pending",
                )
                .on_conflict_do_nothing(index_elements=["message_id"])
                .returning(Reply.id)
            )
            reply_id = await s.scalar(stmt)
            if reply_id is None:
                return None
            return ReplyRef(reply_id, message_id, post.prompt_slug, post.guild_id, author_id, content)

    async def edit_reply(self, message_id: int, content: str, edited_at: datetime) -> ReplyRef | None:
        """Store an edit; returns the reply to reclassify, or ``None`` if the message is not a stored reply, its
        text did not change, its prompt is closed here, or its author opted out."""
        async with self.transaction() as s:
            row = (
                await s.execute(
                    select(Reply, PromptPost.closed_at)
                    .join(PromptPost, PromptPost.id == Reply.post_id)
                    .where(Reply.message_id == message_id, Reply.deleted_at.is_(None))
                )
            ).first()
            if row is None:
                return None
            reply, closed_at = row
            if reply.content == content or closed_at is not None:
                return None
            if await self._opted_out(s, reply.guild_id, reply.author_id):
                return None
            reply.content, reply.edited_at, reply.status = content, edited_at, "pending"
            slug = await s.scalar(select(PromptRow.slug).where(PromptRow.id == reply.prompt_id))
            assert slug is not None
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
            await self.recount_member(s, reply.prompt_id, reply.guild_id, reply.author_id)
            return True

    async def save_stance(
        self, reply_id: int, result: StanceResult, *, model_version: str, source: str = "model"
    ) -> None:
        """Make ``result`` the reply's current stance, update what the tally counts, and queue the reply for
        review when the model was unsure (see :func:`bot.core.moderation.needs_review`)."""
        async with self.transaction() as s:
            reply = await s.get(Reply, reply_id)
            if reply is None or reply.deleted_at is not None:
                return
            await self._add_stance(s, reply, result, model_version=model_version, source=source)
            await self.recount_member(s, reply.prompt_id, reply.guild_id, reply.author_id)
            if source == "model":
                await self._update_review(s, reply, result)

    async def _add_stance(
        self, s: AsyncSession, reply: Reply, result: StanceResult, *, model_version: str, source: str
    ) -> None:
        await s.execute(update(Stance).where(Stance.reply_id == reply.id, Stance.is_current).values(is_current=False))
        s.add(
            Stance(
                reply_id=reply.id,
                prompt_id=reply.prompt_id,
                guild_id=reply.guild_id,
                author_id=reply.author_id,
                label=result.label,
                confidence=result.confidence,
                model_version=model_version[:120],
                reason=(result.reason or None) and result.reason[:200],
                source=source,
                is_current=True,
            )
        )
        reply.status = "classified"
        await s.flush()

    async def _update_review(self, s: AsyncSession, reply: Reply, result: StanceResult) -> None:
        item = await s.scalar(select(ReviewItem).where(ReviewItem.reply_id == reply.id))
        if needs_review(result, below=self.review_below):
            if item is None:
                s.add(
                    ReviewItem(
                        reply_id=reply.id,
                        prompt_id=reply.prompt_id,
                        guild_id=reply.guild_id,
                        model_label=runner_up(result),
                        confidence=result.confidence,
                        status="open",
                    )
                )
            else:
                item.status, item.model_label, item.confidence = "open", runner_up(result), result.confidence
                item.resolved_by = item.resolved_at = None
        elif item is not None and item.status == "open":
            item.status, item.resolved_at = "closed", utcnow()

    async def _lock_member(self, s: AsyncSession, prompt_id: int, guild_id: int, author_id: int) -> None:
        """Serialise recounts of one member on PostgreSQL (SQLite serialises every write already)."""
        if dialect_of(s) == "postgresql":
            key = (prompt_id * 1_000_003 + guild_id * 7_919 + author_id) % (2**63 - 1)
            await s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    async def recount_member(self, s: AsyncSession, prompt_id: int, guild_id: int, author_id: int) -> None:
        """Re-apply the counting rules to one member's stances on one prompt (cheap: one member's rows)."""
        await self._lock_member(s, prompt_id, guild_id, author_id)
        member = and_(Stance.prompt_id == prompt_id, Stance.guild_id == guild_id, Stance.author_id == author_id)
        rows = await s.execute(
            select(Stance.id, Stance.label, Reply.created_at, Reply.message_id)
            .join(Reply, Reply.id == Stance.reply_id)
            .where(member, Stance.is_current, Reply.deleted_at.is_(None))
        )
        live = [LiveStance(r.id, r.label, r.created_at, r.message_id) for r in rows]
        declared = await s.scalar(
            select(DeclaredStance).where(
                DeclaredStance.prompt_id == prompt_id,
                DeclaredStance.guild_id == guild_id,
                DeclaredStance.author_id == author_id,
            )
        )
        opted_out = await self._opted_out(s, guild_id, author_id)
        result = count_member(
            live, rules=self.rules, declared=declared.label if declared else None, opted_out=opted_out
        )
        await s.execute(update(Stance).where(member, Stance.counted).values(counted=False))
        if result.stance_ids:
            await s.execute(update(Stance).where(Stance.id.in_(result.stance_ids)).values(counted=True))
        if declared is not None:
            declared.counted, declared.model_label = result.declared_counts, result.model_label
            await s.flush()

    async def pending_replies(self, limit: int = 500) -> list[ReplyRef]:
        """Replies stored but not yet classified (e.g. the bot stopped before classifying them)."""
        async with self.transaction() as s:
            rows = await s.execute(
                select(Reply, PromptRow.slug)
                .join(PromptRow, PromptRow.id == Reply.prompt_id)
                .where(Reply.status == "pending", Reply.deleted_at.is_(None))
                .order_by(Reply.id)
                .limit(limit)
            )
            return [ReplyRef(r.id, r.message_id, slug, r.guild_id, r.author_id, r.content or "") for r, slug in rows]

    async def reply_prompt(self, message_id: int) -> str | None:
        """The prompt id of the stored reply with this message id."""
        async with self.transaction() as s:
            return await s.scalar(
                select(PromptRow.slug)
                .join(Reply, Reply.prompt_id == PromptRow.id)
                .where(Reply.message_id == message_id)
            )

    async def stance_of(self, message_id: int) -> StoredStance | None:
        """The current stance of the reply with this message id."""
        async with self.transaction() as s:
            row = (
                await s.execute(
                    select(Stance, Reply.message_id)
                    .join(Reply, Reply.id == Stance.reply_id)
                    .where(Reply.message_id == message_id, Stance.is_current)
                )
            ).first()
            if row is None:
                return None
            st, mid = row
            return StoredStance(mid, st.label, st.confidence, st.model_version, st.reason, st.source, st.counted)

    async def tally(self, prompt: Prompt, guild_id: int) -> Tally:
        """Counts per label of what counts (stances and declared stances), for one prompt in one guild."""
        return (await self.standings(prompt, guild_id))[0]

    async def comparison(self, prompt: Prompt, guild_id: int) -> Comparison:
        """The model's stances beside the declared ones, and how often they agree (members with both)."""
        return (await self.standings(prompt, guild_id))[1]

    async def standings(self, prompt: Prompt, guild_id: int) -> tuple[Tally, Comparison]:
        """The tally and the model-vs-declared comparison, from one read of the counted stances and the declared
        ones (what ``/stance tally`` and a digest show together)."""
        counts: dict[str, int] = defaultdict(int)  # the tally: counted stances and counted declared stances
        model: dict[str, int] = defaultdict(int)
        declared: dict[str, int] = defaultdict(int)
        both = agree = 0
        async with self.transaction() as s:
            prow = await self._prompt_row(s, prompt.id, guild_id)
            if prow is not None:
                stance_rows = await s.execute(
                    select(Stance.label, func.count())
                    .where(Stance.prompt_id == prow.id, Stance.guild_id == guild_id, Stance.counted)
                    .group_by(Stance.label)
                )
                for label, n in stance_rows:
                    counts[label] += int(n)
                    model[label] += int(n)
                decl_rows = await s.execute(
                    select(DeclaredStance.label, DeclaredStance.model_label, DeclaredStance.counted, func.count())
                    .where(DeclaredStance.prompt_id == prow.id, DeclaredStance.guild_id == guild_id)
                    .group_by(DeclaredStance.label, DeclaredStance.model_label, DeclaredStance.counted)
                )
                for label, model_label, counted, n in decl_rows:
                    declared[label] += int(n)
                    if counted:
                        counts[label] += int(n)
                        if model_label is not None:
                            model[model_label] += int(n)  # their stances do not count: add what the model says
                    if model_label is not None and model_label != UNCLEAR:
                        both += int(n)
                        agree += int(n) if model_label == label else 0
        tally = Tally(prompt.id, prompt.label_names, dict(counts))
        return tally, Comparison(prompt.label_names, dict(model), dict(declared), both, agree)

    async def count_replies(self, message_ids: Sequence[int] | None = None) -> int:
        """How many reply rows exist (optionally among ``message_ids``)."""
        async with self.transaction() as s:
            q = select(func.count()).select_from(Reply)
            if message_ids is not None:
                q = q.where(Reply.message_id.in_(list(message_ids)))
            return int(await s.scalar(q) or 0)

    # -- declared stances ---------------------------------------------------------------------------------------

    async def declare(self, prompt_message_id: int, *, author_id: int, label: str) -> DeclareResult:
        """A member pressed a stance button on a prompt message: declare ``label``, or withdraw it if it was
        already their declaration. Refused when the prompt is closed or the member opted out."""
        async with self.transaction() as s:
            row = (await s.execute(self._post_query().where(PromptPost.message_id == prompt_message_id))).first()
            if row is None:
                raise PromptError("This prompt message is not one Stancebot posted (or it was removed).")
            post = self._post_info(row[0], row[1])
            if post.closed:
                raise PromptClosedError(f"Prompt {post.prompt_slug!r} is closed: stances are no longer counted.")
            if await self._opted_out(s, post.guild_id, author_id):
                raise OptedOutError("You opted out of being counted here; `/stance opt-in` to take part again.")
            prow = await s.get(PromptRow, post.prompt_row_id)
            assert prow is not None
            prompt = prompt_from_dict(prow.definition)
            if label == UNCLEAR or label not in prompt.label_names:
                raise LabelError(f"{label!r} is not a stance of prompt {prompt.id!r}.")
            await self._lock_member(s, post.prompt_row_id, post.guild_id, author_id)
            current = await s.scalar(
                select(DeclaredStance).where(
                    DeclaredStance.prompt_id == post.prompt_row_id,
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
                    DeclaredStance(
                        prompt_id=post.prompt_row_id, guild_id=post.guild_id, author_id=author_id, label=label
                    )
                )
                new = label
            await s.flush()
            await self.recount_member(s, post.prompt_row_id, post.guild_id, author_id)
            counted = new is not None and self.rules.declared_overrides
            return DeclareResult(post.prompt_slug, previous, new, counted)
