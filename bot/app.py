"""The Discord client: ``Stancebot(commands.Bot)``, given its settings, storage and stance service."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord
from discord.ext import commands

from bot.config import Settings
from bot.core.prompts import PromptCatalog
from bot.core.service import StanceService
from bot.pipeline import ReplyPipeline
from bot.storage.repository import PostInfo, Repository

log = logging.getLogger(__name__)

EXTENSIONS = ("bot.cogs.errors", "bot.cogs.prompts", "bot.cogs.stance")


@dataclass
class Services:
    """Everything the cogs use besides Discord itself."""

    settings: Settings
    catalog: PromptCatalog
    repo: Repository
    stance: StanceService
    pipeline: ReplyPipeline


class Stancebot(commands.Bot):
    """The bot. Mentions are off for every message unless a call opts in."""

    def __init__(self, services: Services) -> None:
        intents = discord.Intents.default()
        intents.message_content = services.settings.bot.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
        )
        self.services = services
        self._posts: dict[int, PostInfo] = {}

    async def setup_hook(self) -> None:
        """Sync prompt files to the database, load cogs (a broken one is logged, not fatal), sync commands."""
        for prompt in self.services.catalog:
            await self.services.repo.sync_prompt(prompt)
        for post in await self.services.repo.open_posts():
            self._posts[post.thread_id] = post
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
        await self.services.pipeline.resume()

    def remember_post(self, post: PostInfo) -> None:
        """Start reading replies in a newly posted prompt thread."""
        self._posts[post.thread_id] = post

    async def post_for_thread(self, thread_id: int) -> PostInfo | None:
        """The prompt post a thread belongs to (cached; falls back to the database)."""
        post = self._posts.get(thread_id)
        if post is None:
            post = await self.services.repo.post_for_thread(thread_id)
            if post is not None:
                self._posts[thread_id] = post
        return post

    async def on_ready(self) -> None:
        """Log once the gateway session is ready."""
        assert self.user is not None
        log.info("Connected as %s (%s) to %d guilds", self.user, self.user.id, len(self.guilds))

    async def close(self) -> None:
        """Stop the stance worker, then disconnect."""
        await self.services.stance.close()
        await super().close()
