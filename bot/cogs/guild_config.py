"""``/config``: per-server settings. For now the time zone digests and scheduled posts use."""

from __future__ import annotations

import logging
import zoneinfo
from functools import cache
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import command_allowed, moderator_only
from bot.core.periods import zone

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)


@cache
def _zones() -> tuple[str, ...]:
    return tuple(
        sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))
    )


@app_commands.guild_only()
@app_commands.default_permissions(manage_messages=True)
class GuildConfig(commands.GroupCog, group_name="config", group_description="Server settings (moderators)"):
    """Server settings stored in the ``guilds`` table."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="timezone", description="Show or set the server's time zone (digests, schedules)")
    @app_commands.describe(name="An IANA time zone such as Europe/Berlin; leave empty to see the current one")
    @moderator_only()
    async def timezone(self, interaction: discord.Interaction, name: str | None = None) -> None:
        """Show the zone, or set it and move every digest schedule of the server to it."""
        assert interaction.guild is not None
        default = self.bot.services.settings.general.timezone
        if name is None:
            current = await self.bot.services.repo.guilds.guild_timezone(interaction.guild.id)
            text = f"This server's time zone is **{current}**." if current else f"No zone set; using **{default}**."
            await interaction.response.send_message(text, ephemeral=True)
            return
        zone(name)  # a clear error for unknown names
        await self.bot.services.repo.guilds.ensure_guild(interaction.guild.id, interaction.guild.name)
        moved = await self.bot.services.repo.guilds.set_guild_timezone(interaction.guild.id, name, now=self.bot.now())
        self.bot.dispatch("schedules_changed")
        log.info("Guild %s time zone set; %d schedules moved", interaction.guild.id, len(moved))
        note = f" {len(moved)} digest schedule(s) now follow it." if moved else ""
        await interaction.response.send_message(f"Time zone set to **{name}**.{note}", ephemeral=True)

    @timezone.autocomplete("name")
    async def _zone_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if not await command_allowed(interaction):
            return []
        needle = current.lower().replace(" ", "_")
        return [app_commands.Choice(name=z, value=z) for z in _zones() if needle in z.lower()][:25]


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(GuildConfig(bot))
