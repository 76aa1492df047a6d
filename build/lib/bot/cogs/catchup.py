"""Catch-up after downtime: replies posted while the bot was away are read from channel history and stored.

On every ``on_ready`` (the start, and reconnects that could not resume the gateway session) and when the pipeline
reports threads whose replies its full spool could not keep, each open prompt thread of a guild this process
serves is read from the newest stored reply on, minus ``pipeline.catch_up_overlap_s`` (so a reply stored out of
order cannot hide a gap just before it). Messages not stored yet go through the pipeline like live ones and are
classified in the background. Idempotent by message id: a second run, or live events arriving meanwhile, store
nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.core.errors import StancebotError
from bot.core.tasks import BackgroundTask
from bot.storage.records import NewReply, PostInfo

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

#: Threads read from history at the same time (each is a series of REST calls of 100 messages).
CONCURRENCY = 4
#: Messages looked up and stored per step.
PAGE = 100
REPLY_TYPES = (discord.MessageType.default, discord.MessageType.reply)


@dataclass(frozen=True)
class CatchUpReport:
    """What one catch-up run found."""

    threads: int
    fetched: int
    stored: int
    failed_threads: int


def is_member_reply(message: discord.Message) -> bool:
    """Whether a message in a prompt thread is a member's reply (not a bot's, a webhook's or a system message)."""
    return not message.author.bot and message.webhook_id is None and message.type in REPLY_TYPES


def reply_text(content: str, bot_id: int) -> str:
    """The reply's text without mentions of the bot (the same rule as live replies in ``bot.cogs.stance``)."""
    return re.sub(rf"<@!?{bot_id}>", " ", content).strip()


def overlap_snowflake(message_id: int, seconds: int) -> int:
    """A snowflake ``seconds`` before ``message_id`` (snowflakes carry milliseconds in their top bits)."""
    return max(message_id - ((seconds * 1000) << 22), 0)


class CatchUp(commands.Cog):
    """Reads prompt threads' history after downtime."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        self._task = BackgroundTask("catch-up", self.run)
        #: The last finished run (tests, logs).
        self.last_report: CatchUpReport | None = None
        #: Set each time a run finishes.
        self.finished = asyncio.Event()

    async def cog_load(self) -> None:
        """Catch up now if the bot is already connected."""
        if self.bot.is_ready():
            self._start()

    async def cog_unload(self) -> None:
        """Stop a run in progress."""
        await self._task.stop()

    @commands.Cog.listener()
    async def on_threads_missed(self, thread_ids: set[int]) -> None:
        """The pipeline's full spool could not keep some replies of these threads: read them from history."""
        try:
            await self.catch_up_threads(thread_ids)
        except Exception:
            log.exception("Catching up %d threads after a full spool failed", len(thread_ids))

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Catch up once the gateway session is ready (every guild is known)."""
        self._start()

    def _start(self) -> None:
        if not self.bot.services.settings.pipeline.catch_up:
            return
        if self._task.running:
            return  # a run in progress reads up to now; live events cover the rest
        self.finished.clear()
        self._task.start()

    async def run(self) -> CatchUpReport:
        """Catch up every open prompt thread of the guilds this process serves."""
        services = self.bot.services
        posts = [
            post
            for post in await services.repo.prompts.open_posts()
            if services.pipeline.owns_guild(post.guild_id) and self.bot.get_guild(post.guild_id) is not None
        ]
        return await self._catch_up(posts)

    async def catch_up_threads(self, thread_ids: set[int]) -> None:
        """Catch up these threads (the pipeline could not keep some of their replies)."""
        posts = [post for post in await self.bot.services.repo.prompts.open_posts() if post.thread_id in thread_ids]
        await self._catch_up(posts)

    async def _catch_up(self, posts: Sequence[PostInfo]) -> CatchUpReport:
        pipeline = self.bot.services.pipeline
        last = await pipeline.store.last_message_ids(post.thread_id for post in posts)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(post: PostInfo) -> tuple[int, int] | None:
            async with limit:
                try:
                    return await self._thread(post, last.get(post.thread_id))
                except (discord.HTTPException, StancebotError) as exc:
                    log.warning("Catch-up of thread %s failed: %s", post.thread_id, exc)
                    return None

        results = await asyncio.gather(*(one(post) for post in posts))
        done = [r for r in results if r is not None]
        report = CatchUpReport(
            threads=len(posts),
            fetched=sum(r[0] for r in done),
            stored=sum(r[1] for r in done),
            failed_threads=len(results) - len(done),
        )
        self.last_report = report
        self.finished.set()
        if report.stored or report.failed_threads:
            log.info(
                "Catch-up: %d threads read, %d messages fetched, %d replies stored that were missed, %d threads failed",
                report.threads,
                report.fetched,
                report.stored,
                report.failed_threads,
            )
        return report

    async def _thread(self, post: PostInfo, last_id: int | None) -> tuple[int, int]:
        """Read one thread from ``last_id`` (minus the overlap) on; returns (messages fetched, replies stored)."""
        channel = self.bot.get_channel(post.thread_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(post.thread_id)
            except discord.NotFound:
                return 0, 0
        if not isinstance(channel, discord.Thread):
            return 0, 0
        overlap = self.bot.services.settings.pipeline.catch_up_overlap_s
        after = discord.Object(overlap_snowflake(last_id, overlap)) if last_id is not None else None
        fetched = stored = 0
        page: list[discord.Message] = []
        async for message in channel.history(limit=None, after=after, oldest_first=True):
            fetched += 1
            if is_member_reply(message):
                page.append(message)
            if len(page) >= PAGE:
                stored += await self._store(post, page)
                page = []
        if page:
            stored += await self._store(post, page)
        return fetched, stored

    async def _store(self, post: PostInfo, messages: list[discord.Message]) -> int:
        pipeline = self.bot.services.pipeline
        assert self.bot.user is not None
        known = await pipeline.store.known_message_ids(m.id for m in messages)
        items = []
        for message in messages:
            if message.id in known:
                continue
            text = reply_text(message.content, self.bot.user.id)
            if not text and not getattr(self.bot, "message_content_enabled", True):
                continue  # Discord withheld the text: nothing to classify (as for live replies)
            items.append(NewReply(post, message.id, message.author.id, text, message.created_at))
        return await pipeline.ingest(items) if items else 0


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(CatchUp(bot))
