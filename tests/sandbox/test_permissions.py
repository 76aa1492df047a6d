"""The loopback server's permissions: roles, channel overwrites in Discord's documented order, the permissions an
interaction carries in a guild channel and in a DM, and where a synced command is offered."""

from __future__ import annotations

import discord
import pytest

from bot.sandbox import LoopbackDiscord
from bot.sandbox._interactions import TYPE_APPLICATION_COMMAND, Interactions
from bot.sandbox._permissions import ALL_PERMISSIONS, DM_APP_PERMISSIONS

MANAGE = discord.Permissions(manage_messages=True).value
SEND = discord.Permissions(send_messages=True).value
VIEW = discord.Permissions(view_channel=True).value


def _has(value: int, bits: int) -> bool:
    return value & bits == bits


def test_overwrites_apply_everyone_then_roles_together_then_the_member() -> None:
    server = LoopbackDiscord()
    guild = server.world.create_guild("g")
    channel = server.world.create_channel(guild, "c")
    member = server.world.create_member(guild, "m")
    a, b = server.world.create_role(guild, "a"), server.world.create_role(guild, "b")
    member.role_ids += [a.id, b.id]
    everyone = guild.roles[guild.id]
    assert _has(guild.channel_permissions_of(member, channel), SEND | VIEW)  # @everyone's base

    server.set_overwrite(channel, everyone, deny=SEND | VIEW)
    assert not guild.channel_permissions_of(member, channel) & (SEND | VIEW)
    # role overwrites combine regardless of position: one role denies what the other allows, the allow wins
    server.set_overwrite(channel, a, deny=VIEW)
    server.set_overwrite(channel, b, allow=VIEW | SEND)
    assert _has(guild.channel_permissions_of(member, channel), SEND | VIEW)
    server.set_overwrite(channel, member, deny=SEND, allow=MANAGE)  # the member's own overwrite comes last
    value = guild.channel_permissions_of(member, channel)
    assert _has(value, VIEW | MANAGE) and not value & SEND
    assert not guild.permissions_of(member) & MANAGE  # guild-level permissions know nothing of overwrites

    other = server.world.create_channel(guild, "elsewhere")
    assert not guild.channel_permissions_of(member, other) & MANAGE
    thread = server.world.create_thread(channel, "t", member.id)
    assert guild.channel_permissions_of(member, thread) == value  # a thread takes its parent's overwrites
    sent = {(o["id"], o["type"], o["allow"], o["deny"]) for o in channel.payload()["permission_overwrites"]}
    assert (str(member.id), 1, str(MANAGE), str(SEND)) in sent


def test_administrators_and_the_owner_ignore_overwrites() -> None:
    server = LoopbackDiscord()
    guild = server.world.create_guild("g")
    channel = server.world.create_channel(guild, "c")
    admin = server.world.create_member(guild, "admin", permissions=discord.Permissions(administrator=True).value)
    owner = guild.members[server.world.owner.id]
    server.set_overwrite(channel, guild.roles[guild.id], deny=ALL_PERMISSIONS)
    for who in (admin, owner):
        server.set_overwrite(channel, who, deny=ALL_PERMISSIONS)
        assert guild.channel_permissions_of(who, channel) == ALL_PERMISSIONS


def test_interactions_carry_channel_permissions_and_dm_payloads() -> None:
    server = LoopbackDiscord()
    world = server.world
    guild = world.create_guild("g")
    debate, corner = world.create_channel(guild, "debate"), world.create_channel(guild, "corner")
    member = world.create_member(guild, "m")
    server.set_overwrite(corner, member, allow=MANAGE)
    bot_member = guild.members[world.bot_user.id]
    server.set_overwrite(corner, bot_member, deny=SEND)
    interactions = Interactions(world, ack_deadline=3)

    here = interactions.open(TYPE_APPLICATION_COMMAND, {}, guild, corner, member).payload
    assert _has(int(here["member"]["permissions"]), MANAGE) and here["context"] == 0
    assert not int(here["app_permissions"]) & SEND
    there = interactions.open(TYPE_APPLICATION_COMMAND, {}, guild, debate, member).payload
    assert not int(there["member"]["permissions"]) & MANAGE and _has(int(there["app_permissions"]), SEND)

    dm = interactions.open(TYPE_APPLICATION_COMMAND, {}, None, server.dm_channel(member), member).payload
    assert "guild_id" not in dm and "member" not in dm and dm["user"]["id"] == str(member.id)
    assert dm["context"] == 1 and dm["authorizing_integration_owners"] == {"0": "0"}
    assert int(dm["app_permissions"]) == DM_APP_PERMISSIONS


def _sync(server: LoopbackDiscord, scope: int | None, **fields: object) -> None:
    command = {"id": "1", "name": "cmd", "type": 1, "description": "d", "options": []} | fields
    server.world.commands[scope] = [command]


def test_commands_are_offered_where_discord_offers_them() -> None:
    server = LoopbackDiscord()
    guild = server.world.create_guild("g")
    channel = server.world.create_channel(guild, "c")
    member = server.world.create_member(guild, "m")
    dm = server.dm_channel(member)

    _sync(server, None, contexts=None)  # null contexts: everywhere
    assert server._command(None, "cmd", member.user, channel=dm)["name"] == "cmd"
    _sync(server, None, contexts=[0], dm_permission=False)  # app_commands.guild_only
    assert server._command(guild, "cmd", member, channel=channel)["name"] == "cmd"
    with pytest.raises(PermissionError, match="not available in DMs"):
        server._command(None, "cmd", member.user, channel=dm)
    _sync(server, None, contexts=[0, 1])
    assert server._command(None, "cmd", member.user, channel=dm)["name"] == "cmd"
    _sync(server, None, dm_permission=False)
    with pytest.raises(PermissionError, match="dm_permission"):
        server._command(None, "cmd", member.user, channel=dm)

    server.world.commands.clear()
    _sync(server, guild.id, guild_id=str(guild.id))
    with pytest.raises(LookupError):  # a guild command is not even listed outside its guild
        server._command(None, "cmd", member.user, channel=dm)

    # default_member_permissions are weighed in the channel: an overwrite there shows the command
    server.world.commands.clear()
    _sync(server, None, default_member_permissions=str(MANAGE))
    with pytest.raises(PermissionError, match="needs permissions"):
        server._command(guild, "cmd", member, channel=channel)
    server.set_overwrite(channel, member, allow=MANAGE)
    assert server._command(guild, "cmd", member, channel=channel)["name"] == "cmd"
