"""The retention purge: removes old replies' text every ``privacy.purge_interval_minutes``. (Members' own privacy
commands are part of ``/stance``: :mod:`bot.cogs._privacy_commands`.)"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from discord.ext import commands

from bot.cogs._privacy_commands import delete_bot_messages
from bot.core.tasks import BackgroundTask
from bot.storage.models import utcnow

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

PURGE_BATCH = 1000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class Privacy(commands.Cog):
    """The retention purge."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        self._purge = BackgroundTask("retention-purge", self._purge_loop)

    async def cog_load(self) -> None:
        """Start the retention purge (when a retention is configured)."""
        if self.bot.services.settings.privacy.retention_days > 0:
            self._purge.start()

    async def cog_unload(self) -> None:
        """Stop the purge."""
        await self._purge.stop()

    async def purge_once(self) -> int:
        """Remove the text of replies older than the retention; returns how many were purged."""
        days = self.bot.services.settings.privacy.retention_days
        if days <= 0:
            return 0
        await self.bot.services.pipeline.settle()  # old replies still in the outage spool are purged too
        before = utcnow() - timedelta(days=days)
        total = 0
        while True:
            report = await self.bot.services.repo.privacy.purge_text(before, limit=PURGE_BATCH)
            total += report.replies
            await delete_bot_messages(self.bot, report.review_messages)
            if report.replies < PURGE_BATCH:
                return total

    async def _purge_loop(self) -> None:
        await self.bot.wait_until_ready()
        interval = self.bot.services.settings.privacy.purge_interval_minutes * 60
        while True:
            try:
                purged = await self.purge_once()
                if purged:
                    log.info("Retention purge: removed the text of %d replies", purged)
            except Exception:
                log.exception("Retention purge failed; it runs again in %d s", interval)
            await asyncio.sleep(interval)


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(Privacy(bot))
