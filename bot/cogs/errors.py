"""One place where app-command errors become short ephemeral answers; anything unexpected is logged in full."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.errors import StancebotError

log = logging.getLogger(__name__)


async def send_ephemeral(interaction: discord.Interaction, content: str) -> None:
    """Answer an interaction privately, whether or not it was already answered or deferred."""
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
    else:
        await interaction.response.send_message(
            content, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


class Errors(commands.Cog):
    """Installs the app-command tree's error handler."""

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self._previous = bot.tree.on_error
        bot.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    async def cog_unload(self) -> None:
        """Restore the default handler."""
        self.bot.tree.on_error = self._previous  # type: ignore[method-assign]

    async def on_app_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Map an error to a message for the user."""
        original = getattr(error, "original", error)
        if isinstance(original, StancebotError):
            message = str(original)
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "You can't use this command here."
        elif isinstance(original, discord.Forbidden):
            message = "Discord refused that: I am missing a permission in this channel."
        else:
            log.error(
                "Command %s failed (guild=%s channel=%s user=%s)",
                interaction.command.qualified_name if interaction.command else "?",
                interaction.guild_id,
                interaction.channel_id,
                interaction.user.id,
                exc_info=original,
            )
            message = "Sorry, something went wrong on my side. The moderators can find the details in the log."
        try:
            await send_ephemeral(interaction, message)
        except discord.HTTPException:
            log.warning("Could not send the error message for interaction %s", interaction.id)


async def setup(bot: commands.Bot) -> None:
    """Load the cog."""
    await bot.add_cog(Errors(bot))
