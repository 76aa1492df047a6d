"""One place where errors in commands, buttons and modals become short ephemeral answers; anything unexpected is
logged in full (with guild, channel and user ids) and the user gets an apology."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

import discord
from discord import app_commands
from discord.ext import commands

from bot.core.errors import StancebotError

log = logging.getLogger(__name__)

APOLOGY = "Sorry, something went wrong on my side. The moderators can find the details in the log."


async def send_ephemeral(interaction: discord.Interaction, content: str) -> None:
    """Answer an interaction privately, whether or not it was already answered or deferred."""
    if interaction.response.is_done():
        await interaction.followup.send(content, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
    else:
        await interaction.response.send_message(
            content, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


#: What a moderator is told when Discord refuses a request, by Discord's JSON error code.
DISCORD_ERRORS = {
    50001: "Discord refused that: I can't access this channel (Missing Access). Let me view it and try again.",
    50013: "Discord refused that: I am missing a permission in this channel (Missing Permissions).",
    10003: "That channel or thread no longer exists (Unknown Channel); was it deleted? Try again where it exists.",
    10008: "That message no longer exists (Unknown Message); was it deleted while I worked? Try again.",
}


def discord_trouble(error: discord.HTTPException) -> str | None:
    """The message for a refusal or failure on Discord's side, or ``None`` if it is not one of those."""
    if error.code in DISCORD_ERRORS:
        return DISCORD_ERRORS[error.code]
    if isinstance(error, discord.Forbidden):
        return "Discord refused that: I am missing a permission in this channel."
    if isinstance(error, discord.DiscordServerError):
        return f"Discord is having trouble right now (HTTP {error.status}); nothing was lost, try again in a minute."
    return None


def describe(interaction: discord.Interaction, error: BaseException, *, what: str) -> str:
    """The message for the user; logs the full traceback of anything that is not a user-facing error."""
    original = getattr(error, "original", error)
    if isinstance(original, StancebotError):
        return str(original)
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You can't use this command here."
    if isinstance(original, discord.HTTPException) and (known := discord_trouble(original)):
        log.warning("%s: Discord answered %s (code %s)", what, original.status, original.code)
        return known
    log.error(
        "%s failed (guild=%s channel=%s user=%s)",
        what,
        interaction.guild_id,
        interaction.channel_id,
        interaction.user.id,
        exc_info=original,
    )
    return APOLOGY


async def report_error(interaction: discord.Interaction, error: BaseException, *, what: str) -> None:
    """Tell the user what went wrong (briefly, privately); never raises."""
    message = describe(interaction, error, what=what)
    try:
        await send_ephemeral(interaction, message)
    except discord.HTTPException:
        log.warning("Could not send the error message for interaction %s", interaction.id)


async def guarded(interaction: discord.Interaction, action: Awaitable[None], *, what: str) -> None:
    """Run a button's or modal's work, reporting any error like a command's (views only log them otherwise)."""
    try:
        await action
    except Exception as exc:
        await report_error(interaction, exc, what=what)


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
        name = interaction.command.qualified_name if interaction.command else "?"
        await report_error(interaction, error, what=f"Command {name}")


async def setup(bot: commands.Bot) -> None:
    """Load the cog."""
    await bot.add_cog(Errors(bot))
