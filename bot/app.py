"""The Discord client: ``Stancebot(commands.AutoShardedBot)``, given its settings, storage and stance service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import discord
from discord.ext import commands

from bot.config import Settings
from bot.core.prompts import Prompt, PromptCatalog
from bot.core.service import StanceService
from bot.heap import freeze_heap, thaw_heap
from bot.pipeline import ReplyPipeline
from bot.pipeline.learning import ServerLearning
from bot.storage.records import PostInfo
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

EXTENSIONS = (
    "bot.cogs.errors",
    "bot.cogs.prompts",
    "bot.cogs.digest",
    "bot.cogs.guild_config",
    "bot.cogs.stance",
    "bot.cogs.moderation",
    "bot.cogs.privacy",
    "bot.cogs.catchup",
)

NO_CONTENT_NOTE = (
    "I cannot read messages (no message-content intent): replies count when they mention me, "
    "through /stance submit, or with the stance buttons."
)


@dataclass
class Services:
    """Everything the cogs use besides Discord itself."""

    settings: Settings
    catalog: PromptCatalog
    repo: Repository
    stance: StanceService
    pipeline: ReplyPipeline
    #: What time it is (aware UTC); ``None`` means the real clock. Tests and the sandbox set a fake one.
    clock: Callable[[], datetime] | None = None
    #: Learning from the server (``None``: off).
    learning: ServerLearning | None = None


class _HasBot(Protocol):
    bot: Stancebot


C = TypeVar("C", bound=_HasBot)
P = ParamSpec("P")
R = TypeVar("R")


def in_flight(handler: Callable[Concatenate[C, P], Awaitable[R]]) -> Callable[Concatenate[C, P], Awaitable[R]]:
    """Mark a cog's event handler as one a graceful stop waits for (it stores or changes replies)."""

    @functools.wraps(handler)
    async def wrapper(cog: C, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with cog.bot.handling():
            return await handler(cog, *args, **kwargs)

    return wrapper


class Stancebot(commands.AutoShardedBot):
    """The bot. Mentions are off for every message unless a call opts in.

    Sharded the way Discord asks: by default one process runs every shard Discord recommends; with
    ``bot.shard_count`` and ``bot.shard_ids`` several processes share the shards (and one database).
    """

    def __init__(self, services: Services) -> None:
        intents = discord.Intents.default()
        intents.message_content = services.settings.bot.message_content_intent
        shards = services.settings.bot
        sharding: dict[str, Any] = {}  # nothing set: discord.py asks Discord how many shards to run
        if shards.shard_count:
            sharding["shard_count"] = shards.shard_count
        if shards.shard_ids:
            sharding["shard_ids"] = list(shards.shard_ids)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            **sharding,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            heartbeat_timeout=shards.heartbeat_timeout,
        )
        self.services = services
        self._posts: dict[int, PostInfo] = {}
        #: Whether ``login`` has begun (discord.py's ``AutoShardedClient.close`` fails before it).
        self._login_started = False
        #: Whether Discord sends this bot the content of messages (see :meth:`_detect_message_content`).
        self.message_content_enabled = services.settings.bot.message_content_intent
        #: Whether :meth:`setup_hook` froze the start-up heap (given back to the collector on :meth:`close`).
        self._heap_frozen = False
        #: Events being handled right now (see :meth:`handling`); set when there are none.
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    async def setup_hook(self) -> None:
        """Sync prompts, detect the message-content intent, load cogs (a broken one is logged, not fatal; each
        registers its own persistent buttons), sync commands, warm up the models, freeze the start-up heap
        (``general.freeze_gc``) and classify what the last run left pending."""
        for prompt in self.services.catalog:
            await self.services.repo.prompts.sync_prompt(prompt)
        for prompt, guild_id in await self.services.repo.prompts.guild_added_prompts():
            if prompt.id in self.services.catalog:
                log.warning("Guild %s's prompt %s is shadowed by the prompt file of that name", guild_id, prompt.id)
                continue
            self.register_prompt(prompt, guild_id)
        for post in await self.services.repo.prompts.open_posts():
            self._posts[post.thread_id] = post
        await self._detect_message_content()
        for ext in EXTENSIONS:
            try:
                await self.load_extension(ext)
            except Exception:
                log.exception("Extension %s failed to load; the bot goes on without it", ext)
        guild_ids = self.services.settings.bot.guild_ids
        if guild_ids:
            for gid in guild_ids:
                guild = discord.Object(gid)
                self.tree.copy_global_to(guild=guild)
                await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()
        await self.services.stance.warm_up()
        await self._start_learning()
        if self.services.settings.general.freeze_gc:
            freeze_heap()
            self._heap_frozen = True
        await self.services.pipeline.resume()

    async def _start_learning(self) -> None:
        """Serve the heads learned before this start, then check every prompt the guilds added for labels that
        arrived meanwhile (in the background)."""
        learning = self.services.learning
        if learning is None:
            return
        await learning.load()
        for prompt, guild_id in await self.services.repo.prompts.guild_added_prompts():
            learning.poke(guild_id, prompt.id)

    async def _detect_message_content(self) -> None:
        """Ask for message content only if the application may have it; otherwise say so and work without it.

        Discord closes the gateway (4014) when a bot asks for a privileged intent it was not granted, so the
        application's flags decide before connecting.
        """
        if not self.message_content_enabled:
            log.warning("Message-content intent off by configuration. %s", NO_CONTENT_NOTE)
            return
        app = self.application or await self.application_info()
        if app.flags.gateway_message_content or app.flags.gateway_message_content_limited:
            return
        log.warning(
            "The application is not granted the message-content intent (Developer Portal > Bot > Privileged "
            "Gateway Intents); connecting without it. %s",
            NO_CONTENT_NOTE,
        )
        self._connection._intents.message_content = False  # read at IDENTIFY, after setup_hook
        self.message_content_enabled = False

    # -- prompts ------------------------------------------------------------------------------------------------

    def register_prompt(self, prompt: Prompt, guild_id: int | None) -> None:
        """Make a prompt usable in one guild (``None``: every guild): posting, classifying, autocomplete."""
        self.services.catalog.add(prompt, guild_id)
        self.services.stance.forget_model(prompt.id, guild_id)

    def prompts_for(self, guild_id: int | None) -> list[Prompt]:
        """The prompts a guild can use: the prompt files and the prompts it added itself."""
        return self.services.catalog.for_guild(guild_id)

    def resolve_prompt(self, prompt_id: str, guild_id: int | None) -> Prompt:
        """The prompt called ``prompt_id`` if this guild can use it; else an error listing the ones it can."""
        return self.services.catalog.get(prompt_id, guild_id)

    def now(self) -> datetime:
        """What time it is (aware UTC): ``services.clock`` when set (tests, the sandbox), else the real clock."""
        clock = self.services.clock
        return clock() if clock is not None else datetime.now(UTC)

    # -- posts --------------------------------------------------------------------------------------------------

    def remember_post(self, post: PostInfo) -> None:
        """Start reading replies in a newly posted prompt thread (or note that a post was closed or reopened)."""
        self._posts[post.thread_id] = post

    async def post_for_thread(self, thread_id: int) -> PostInfo | None:
        """The prompt post a thread belongs to (cached; falls back to the database)."""
        post = self._posts.get(thread_id)
        if post is None:
            post = await self.services.repo.prompts.post_for_thread(thread_id)
            if post is not None:
                self._posts[thread_id] = post
        return post

    async def on_ready(self) -> None:
        """Log once the gateway session is ready."""
        assert self.user is not None
        log.info(
            "Connected as %s (%s) to %d guilds; message content %s",
            self.user,
            self.user.id,
            len(self.guilds),
            "on" if self.message_content_enabled else "off",
        )

    async def on_command_error(self, context: commands.Context[Any], exception: commands.CommandError) -> None:
        """There are no text commands: a message that mentions the bot is a reply, not an unknown command."""
        if isinstance(exception, commands.CommandNotFound):
            return
        log.error("Text command failed", exc_info=exception)

    # -- stopping -----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Mark an event handler that writes (a reply, an edit, a deletion) as in flight, so that a graceful stop
        waits for it (:meth:`wait_handled`)."""
        self._busy += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._quiet.set()

    @property
    def in_flight(self) -> int:
        """Event handlers that are storing or classifying something right now."""
        return self._busy

    async def stop_reading(self) -> None:
        """Disconnect every shard from the gateway: no new events come in; those already received go on being
        handled (a graceful stop, then :meth:`close`)."""
        if not self._login_started:
            return
        for shard in list(self.shards.values()):
            await shard.disconnect()

    async def wait_handled(self, timeout: float) -> bool:  # noqa: ASYNC109 - a plain deadline
        """Wait until no event handler is in flight; ``False`` if some still were after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._quiet.wait(), max(timeout, 0))
        except TimeoutError:
            return False
        return True

    async def _async_setup_hook(self) -> None:
        await super()._async_setup_hook()
        self._login_started = True

    async def close(self) -> None:
        """Stop the stance worker, then disconnect (a client that never logged in has nothing to disconnect:
        discord.py's ``AutoShardedClient.close`` fails before ``login``); give a frozen heap back to the collector."""
        if self.services.learning is not None:
            await self.services.learning.close()
        await self.services.stance.close()
        if self._login_started:
            await super().close()
        if self._heap_frozen:
            thaw_heap()
            self._heap_frozen = False
