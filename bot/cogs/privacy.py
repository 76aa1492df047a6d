"""Members' data: ``/stance forget-me``, ``/stance mydata``, ``/stance opt-out``, ``/stance opt-in``, and the
retention purge that removes old replies' text.

The commands join the ``/stance`` group of :mod:`bot.cogs.stance` when this cog loads (load that cog first).
"""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.export import check_size, member_data_to_json
from bot.core.tasks import BackgroundTask
from bot.storage.models import utcnow

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

PURGE_BATCH = 1000
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


class ConfirmForget(discord.ui.View):
    """The ``/stance forget-me`` confirmation: only the member who asked can press it, for two minutes."""

    def __init__(self, cog: Privacy, user_id: int) -> None:
        super().__init__(timeout=120)
        self.cog = cog
        self.user_id = user_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Only the member who asked."""
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Delete everything", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmForget]) -> None:
        """Forget the member, then say what went."""
        self.stop()
        report = await self.cog.bot.services.repo.privacy.forget_member(self.user_id)
        await self.cog.delete_messages(report.review_messages)
        log.info("Forgot a member: %d replies in %d guilds", report.replies, len(report.guild_ids))
        await interaction.response.edit_message(
            content=f"Done. I removed {report.replies} replies, {report.stances} stances and {report.declared} "
            "declared stances of yours from every server, and the tallies no longer count you. The audit log keeps "
            "only an anonymous count. Your messages on Discord itself are yours to delete.",
            view=None,
        )

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmForget]) -> None:
        """Keep everything."""
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


def _privacy_commands(cog: Privacy) -> list[app_commands.Command[Any, ..., None]]:
    """The ``/stance`` subcommands, built per cog instance."""

    @app_commands.command(name="forget-me", description="Delete everything Stancebot stored about you, everywhere")
    async def forget_me(interaction: discord.Interaction) -> None:
        data = await cog.bot.services.repo.privacy.member_data(interaction.user.id)
        replies, declared = len(data["replies"]), len(data["declared_stances"])
        if not replies and not declared:
            await interaction.response.send_message("I have no replies or stances of yours.", ephemeral=True)
            return
        await interaction.response.send_message(
            f"This deletes your {replies} stored replies (and their stances) and {declared} declared stances from "
            "every server, and cannot be undone. `/stance mydata` gets you a copy first.",
            view=ConfirmForget(cog, interaction.user.id),
            ephemeral=True,
        )

    @app_commands.command(name="mydata", description="Get a file with everything Stancebot stored about you")
    async def mydata(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await cog.bot.services.repo.privacy.member_data(interaction.user.id)
        limit = getattr(interaction, "filesize_limit", DEFAULT_UPLOAD_LIMIT) or DEFAULT_UPLOAD_LIMIT
        payload = check_size(member_data_to_json(data).encode(), limit, what="file of your data")
        await interaction.followup.send(
            f"{len(data['replies'])} replies and {len(data['declared_stances'])} declared stances. "
            "`/stance forget-me` deletes all of it.",
            file=discord.File(io.BytesIO(payload), filename=f"stancebot-{interaction.user.id}.json"),
            ephemeral=True,
        )

    @app_commands.command(name="opt-out", description="Stop counting your replies in this server")
    async def opt_out(interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        changed = await cog.bot.services.repo.privacy.opt_out(interaction.guild_id, interaction.user.id)
        text = (
            "You are opted out here: your replies no longer count and new ones are not stored. "
            "`/stance forget-me` also deletes what was stored; `/stance opt-in` undoes this."
            if changed
            else "You had already opted out here."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="opt-in", description="Count your replies in this server again")
    async def opt_in(interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        changed = await cog.bot.services.repo.privacy.opt_in(interaction.guild_id, interaction.user.id)
        text = "Welcome back: your replies count again." if changed else "You were not opted out here."
        await interaction.response.send_message(text, ephemeral=True)

    return [forget_me, mydata, opt_out, opt_in]


class Privacy(commands.Cog):
    """Members' data and the retention purge."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        self._commands = _privacy_commands(self)
        self._purge = BackgroundTask("retention-purge", self._purge_loop)

    async def cog_load(self) -> None:
        """Join the ``/stance`` group and start the retention purge (when a retention is configured)."""
        group = self.bot.tree.get_command("stance")
        if isinstance(group, app_commands.Group):
            for command in self._commands:
                group.add_command(command, override=True)
        else:
            log.warning("/stance is not loaded; the privacy commands are unavailable (load bot.cogs.stance first)")
        if self.bot.services.settings.privacy.retention_days > 0:
            self._purge.start()

    async def cog_unload(self) -> None:
        """Leave the ``/stance`` group and stop the purge."""
        group = self.bot.tree.get_command("stance")
        if isinstance(group, app_commands.Group):
            for command in self._commands:
                group.remove_command(command.name)
        await self._purge.stop()

    async def delete_messages(self, locations: tuple[tuple[int, int], ...]) -> None:
        """Delete the bot's messages that quote removed text (review messages); failures are logged."""
        for channel_id, message_id in locations:
            try:
                await self.bot.http.delete_message(channel_id, message_id, reason="Stancebot: member data removed")
            except discord.HTTPException as exc:
                log.warning("Could not delete message %s in %s (%s)", message_id, channel_id, exc.status)

    async def purge_once(self) -> int:
        """Remove the text of replies older than the retention; returns how many were purged."""
        days = self.bot.services.settings.privacy.retention_days
        if days <= 0:
            return 0
        before = utcnow() - timedelta(days=days)
        total = 0
        while True:
            report = await self.bot.services.repo.privacy.purge_text(before, limit=PURGE_BATCH)
            total += report.replies
            await self.delete_messages(report.review_messages)
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
