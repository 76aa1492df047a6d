"""Shared checks: who is a moderator, and whether the bot itself may do what a command needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import discord
from discord import app_commands

from bot.core.errors import StancebotError

T = TypeVar("T")

MODERATORS_ONLY = (
    "This is for moderators (Manage Messages server-wide, not in one channel only, or the moderator role)."
)
IN_SERVERS_ONLY = "This works in a server, not in direct messages."


class NotModeratorError(app_commands.CheckFailure):
    """The member may not use a moderator command."""


class BotMissingError(StancebotError):
    """The bot lacks a permission it needs in a channel."""


def is_moderator(interaction: discord.Interaction) -> bool:
    """Manage Messages (or Administrator) in the member's server-wide permissions, or the configured moderator role.

    The server-wide permissions come from the member's roles (``Member.guild_permissions``), never from
    ``interaction.permissions``: those are the channel's, after its overwrites, so Manage Messages granted in one
    channel would unlock commands that act on the whole server. Outside a server nobody is a moderator; in a server
    this process does not cache, no roles are known, so nobody is either (it fails closed).
    """
    member = interaction.user
    if interaction.guild_id is None or not isinstance(member, discord.Member):
        return False
    perms = member.guild_permissions
    if perms.manage_messages or perms.administrator:
        return True
    role_setting = interaction.client.services.settings.bot.moderator_role  # type: ignore[attr-defined]
    return bool(role_setting) and any(role_setting in (role.name, str(role.id)) for role in member.roles)


def ensure_in_server(interaction: discord.Interaction) -> None:
    """Raise :class:`discord.app_commands.NoPrivateMessage` outside a server (a command of a group DMs also see)."""
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage(IN_SERVERS_ONLY)


def ensure_moderator(interaction: discord.Interaction) -> None:
    """Raise :class:`NotModeratorError` unless the member is a moderator (for buttons and modals)."""
    ensure_in_server(interaction)
    if not is_moderator(interaction):
        raise NotModeratorError(MODERATORS_ONLY)


def moderator_only() -> Callable[[T], T]:
    """An app-command check that refuses non-moderators (and DMs) with a clear message."""

    async def predicate(interaction: discord.Interaction) -> bool:
        ensure_moderator(interaction)
        return True

    return app_commands.check(predicate)


def server_only() -> Callable[[T], T]:
    """An app-command check for a subcommand that needs a server, in a group that also works in DMs (Discord's
    ``contexts`` apply to a whole group, not to one subcommand)."""

    async def predicate(interaction: discord.Interaction) -> bool:
        ensure_in_server(interaction)
        return True

    return app_commands.check(predicate)


async def command_allowed(interaction: discord.Interaction) -> bool:
    """Whether the interaction's command's own checks pass; for autocomplete, which Discord asks for before the
    command runs and which discord.py answers without running them. A check that raises counts as refused."""
    command = interaction.command
    if not isinstance(command, app_commands.Command):
        return False
    for check in command.checks:
        try:
            if not await discord.utils.maybe_coroutine(check, interaction):
                return False
        except app_commands.AppCommandError:
            return False
    return True


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
