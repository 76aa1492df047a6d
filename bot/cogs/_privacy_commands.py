"""Members' data under ``/stance``: forget-me, mydata, opt-out and opt-in (a mixin of the ``/stance`` cog,
:class:`bot.cogs.stance.StanceCog`)."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import server_only
from bot.core.export import check_size, member_data_to_json

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


async def delete_bot_messages(bot: Stancebot, locations: tuple[tuple[int, int], ...]) -> None:
    """Delete the bot's messages that quote removed text (review messages); failures are logged."""
    for channel_id, message_id in locations:
        try:
            await bot.http.delete_message(channel_id, message_id, reason="Stancebot: member data removed")
        except discord.HTTPException as exc:
            log.warning("Could not delete message %s in %s (%s)", message_id, channel_id, exc.status)


class ConfirmForget(discord.ui.View):
    """The ``/stance forget-me`` confirmation: only the member who asked can press it, for two minutes."""

    def __init__(self, bot: Stancebot, user_id: int) -> None:
        super().__init__(timeout=120)
        self.bot = bot
        self.user_id = user_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """Only the member who asked."""
        return interaction.user.id == self.user_id

    @discord.ui.button(label="Delete everything", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmForget]) -> None:
        """Forget the member, then say what went."""
        self.stop()
        await self.bot.services.pipeline.settle()  # replies still in the outage spool are forgotten too
        report = await self.bot.services.repo.privacy.forget_member(self.user_id)
        await delete_bot_messages(self.bot, report.review_messages)
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


class PrivacyCommands(commands.Cog):
    """The privacy subcommands of ``/stance``. ``mydata`` and ``forget-me`` also work in a DM with the bot and
    cover every server (someone who left them all still reaches their data); opting out is per server."""

    bot: Stancebot

    @app_commands.command(name="forget-me", description="Delete everything Stancebot stored about you, everywhere")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        data = await self.bot.services.repo.privacy.member_data(interaction.user.id)
        replies, declared = len(data["replies"]), len(data["declared_stances"])
        if not replies and not declared:
            await interaction.response.send_message("I have no replies or stances of yours.", ephemeral=True)
            return
        await interaction.response.send_message(
            f"This deletes your {replies} stored replies (and their stances) and {declared} declared stances from "
            "every server, and cannot be undone. `/stance mydata` gets you a copy first.",
            view=ConfirmForget(self.bot, interaction.user.id),
            ephemeral=True,
        )

    @app_commands.command(name="mydata", description="Get a file with everything Stancebot stored about you")
    async def mydata(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        await self.bot.services.pipeline.settle()  # replies still in the outage spool are included
        data = await self.bot.services.repo.privacy.member_data(interaction.user.id)
        limit = getattr(interaction, "filesize_limit", DEFAULT_UPLOAD_LIMIT) or DEFAULT_UPLOAD_LIMIT
        payload = check_size(member_data_to_json(data).encode(), limit, what="file of your data")
        await interaction.followup.send(
            f"{len(data['replies'])} replies and {len(data['declared_stances'])} declared stances. "
            "`/stance forget-me` deletes all of it.",
            file=discord.File(io.BytesIO(payload), filename=f"stancebot-{interaction.user.id}.json"),
            ephemeral=True,
        )

    @app_commands.command(name="opt-out", description="Stop counting your replies in this server")
    @server_only()
    async def opt_out(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        changed = await self.bot.services.repo.privacy.opt_out(interaction.guild_id, interaction.user.id)
        text = (
            "You are opted out here: your replies no longer count and new ones are not stored. "
            "`/stance forget-me` also deletes what was stored; `/stance opt-in` undoes this."
            if changed
            else "You had already opted out here."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="opt-in", description="Count your replies in this server again")
    @server_only()
    async def opt_in(self, interaction: discord.Interaction) -> None:
        assert interaction.guild_id is not None
        changed = await self.bot.services.repo.privacy.opt_in(interaction.guild_id, interaction.user.id)
        text = "Welcome back: your replies count again." if changed else "You were not opted out here."
        await interaction.response.send_message(text, ephemeral=True)
