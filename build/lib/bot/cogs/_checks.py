"""Shared checks: who is a moderator, and whether the bot itself may do what a command needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import discord
from discord import app_commands

from bot.core.errors import StancebotError

T = TypeVar("T")

MODERATORS_ONLY = "This is for moderators (Manage Messages or the moderator role)."


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


def ensure_moderator(interaction: discord.Interaction) -> None:
    """Raise :class:`NotModeratorError` unless the member is a moderator (for buttons and modals)."""
    if not is_moderator(interaction):
        raise NotModeratorError(MODERATORS_ONLY)


def moderator_only() -> Callable[[T], T]:
    """An app-command check that refuses non-moderators with a clear message."""

    async def predicate(interaction: discord.Interaction) -> bool:
        ensure_moderator(interaction)
        return True

    return app_commands.check(predicate)


def _names(missing: list[str]) -> str:
    return ", ".join(m.replace("_", " ").title() for m in missing)


def require_bot_permissions(channel: discord.abc.GuildChannel | discord.Thread, **perms: bool) -> None:
    """Raise a clear error naming what the bot is missing in ``channel``.

    A guild this process does not cache (another shard serves it) cannot be checked here; Discord then decides
    (a refusal arrives as ``discord.Forbidden``, which the error handlers explain).
    """
    me = channel.guild.me
    if me is None:
        return
    have = channel.permissions_for(me)
    missing = [name for name, wanted in perms.items() if wanted and not getattr(have, name)]
    if missing:
        raise BotMissingError(f"I need these permissions in {channel.mention}: {_names(missing)}.")


def require_app_permissions(interaction: discord.Interaction, **perms: bool) -> None:
    """Like :func:`require_bot_permissions`, for the channel the interaction came from (Discord tells us)."""
    have = interaction.app_permissions
    missing = [name for name, wanted in perms.items() if wanted and not getattr(have, name)]
    if missing:
        where = interaction.channel.mention if isinstance(interaction.channel, discord.abc.GuildChannel) else "here"
        raise BotMissingError(f"I need these permissions in {where}: {_names(missing)}.")
