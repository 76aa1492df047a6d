"""Shared app-command checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import discord
from discord import app_commands

from bot.core.errors import StancebotError

T = TypeVar("T")


class NotModeratorError(app_commands.CheckFailure):
    """The member may not use a moderator command."""


class BotMissingError(StancebotError):
    """The bot lacks a permission it needs in a channel."""


def is_moderator(interaction: discord.Interaction) -> bool:
    """Manage Messages in the channel, or the configured moderator role."""
    if interaction.permissions.manage_messages or interaction.permissions.administrator:
        return True
    role_setting = interaction.client.services.settings.bot.moderator_role  # type: ignore[attr-defined]
    member = interaction.user
    if role_setting and isinstance(member, discord.Member):
        return any(role_setting in (role.name, str(role.id)) for role in member.roles)
    return False


def moderator_only() -> Callable[[T], T]:
    """An app-command check that refuses non-moderators with a clear message."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if is_moderator(interaction):
            return True
        raise NotModeratorError("This command is for moderators (Manage Messages or the moderator role).")

    return app_commands.check(predicate)


def require_bot_permissions(channel: discord.abc.GuildChannel | discord.Thread, **perms: bool) -> None:
    """Raise a clear error naming what the bot is missing in ``channel``."""
    me = channel.guild.me
    have = channel.permissions_for(me)
    missing = [name for name, wanted in perms.items() if wanted and not getattr(have, name)]
    if missing:
        names = ", ".join(m.replace("_", " ").title() for m in missing)
        raise BotMissingError(f"I need these permissions in {channel.mention}: {names}.")
