"""Scheduling helpers shared by ``/digest`` and ``/prompt schedule``, and the ``/prompt schedule`` command (a mixin
of the ``/prompt`` cog). Schedules are database rows; after changing them a command dispatches
``schedules_changed`` so that the scheduler (in the digest cog) looks at the database again."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import moderator_only, require_bot_permissions
from bot.cogs._prompts import prompt_autocomplete
from bot.core.periods import ScheduleError, parse_post_time, zone

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()


async def guild_zone(bot: Stancebot, guild_id: int) -> str:
    """The guild's time zone: set with ``/config timezone``, else ``general.timezone`` from the settings."""
    return await bot.services.repo.guilds.guild_timezone(guild_id) or bot.services.settings.general.timezone


def when(instant: datetime) -> str:
    """A Discord timestamp: every reader sees it in their own time zone (``<t:…:F>``, relative in brackets)."""
    unix = int(instant.timestamp())
    return f"<t:{unix}:F> (<t:{unix}:R>)"


class PromptScheduleCommands(commands.Cog):
    """``/prompt schedule``: post a prompt later (a mixin of :class:`bot.cogs.prompts.Prompts`)."""

    bot: Stancebot

    @app_commands.command(name="schedule", description="Post a discussion prompt later, at a set time")
    @app_commands.describe(
        prompt="Which prompt to post",
        time="Local time, 24-hour HH:MM, in the server's time zone (/config timezone)",
        date="YYYY-MM-DD (default: the next time the clock shows that time)",
        channel="Where to post it (default: here)",
    )
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def schedule(
        self,
        interaction: discord.Interaction,
        prompt: str,
        time: str,
        date: str | None = None,
        channel: discord.TextChannel | None = None,
    ) -> None:
        """Schedule a prompt post in a channel."""
        assert interaction.guild is not None
        bot = self.bot
        definition = bot.resolve_prompt(prompt, interaction.guild.id)
        target = channel or interaction.channel
        if not isinstance(target, discord.TextChannel):
            raise ScheduleError("Prompts can be posted in text channels only; pick one with the channel option.")
        require_bot_permissions(
            target, send_messages=True, embed_links=True, create_public_threads=True, send_messages_in_threads=True
        )
        tz = await guild_zone(bot, interaction.guild.id)
        now = bot.now()
        post_at = parse_post_time(date, time, tz, now)
        repo = bot.services.repo
        await repo.guilds.ensure_guild(interaction.guild.id, interaction.guild.name)
        info = await repo.schedules.add_prompt_schedule(
            interaction.guild.id, definition.id, target.id, post_at, tz=tz, created_by=interaction.user.id, now=now
        )
        bot.dispatch("schedules_changed")
        await interaction.response.send_message(
            f"**{definition.id}** will be posted in {target.mention} at {when(info.post_at)} "
            f"({info.post_at.astimezone(zone(tz)):%Y-%m-%d %H:%M} {tz}). "
            f"Cancel with `/digest cancel prompt:{info.id}`.",
            ephemeral=True,
            allowed_mentions=NONE,
        )
