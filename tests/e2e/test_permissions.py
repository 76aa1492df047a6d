"""End to end: who counts as a moderator. Manage Messages granted in one channel by a permission overwrite does not
unlock commands that act on the whole server (not even in that channel); the permission from the member's roles,
or the configured moderator role, does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import discord
import pytest

from bot.core.encoder import SentenceEncoder
from bot.sandbox.server import LoopbackDiscord
from tests.e2e.conftest import UNFAIR, World, bot_on, new_guild, post_prompt, repo_of, text_of, until

MANAGE = discord.Permissions(manage_messages=True)

#: Commands that act on the whole server, with options that would succeed for a moderator.
SERVER_WIDE: list[tuple[str, str, dict[str, Any]]] = [
    ("stance", "export", {"prompt": "alliance", "format": "json"}),
    ("prompt", "close", {"prompt": "alliance"}),
    ("config", "timezone", {"name": "Europe/Berlin"}),
    ("prompt", "post", {"prompt": "defense"}),
    ("digest", "now", {"prompt": "alliance"}),
    ("audit", "recent", {}),
    ("review", "next", {}),
]


def _run(world: World, channel_id: int, who: Any, command: str, sub: str, /, **options: Any) -> Any:
    return world.server.slash(world.guild, channel_id, who, command, subcommand=sub, options=options or None)


def _choices(world: World, channel_id: int, who: Any, command: str, sub: str, focused: str, /, **options: Any) -> Any:
    return world.server.autocomplete(
        world.guild, channel_id, who, command, subcommand=sub, focused=focused, options=options
    )


async def _label(world: World, message_id: int) -> str | None:
    stored = await repo_of(world).tallies.stance_of(message_id)
    return None if stored is None else stored.label


async def _overwrites_seen(world: World, channel_id: int, count: int) -> None:
    async def seen() -> bool:
        channel = world.bot.get_channel(channel_id)
        return isinstance(channel, discord.TextChannel) and len(channel.overwrites) == count

    await until(seen)


async def test_manage_messages_in_one_channel_does_not_unlock_server_wide_commands(world: World) -> None:
    server, guild = world.server, world.guild
    thread_id = await post_prompt(world)
    outcome = await world.reply(thread_id, "maya", UNFAIR)
    link = f"https://discord.com/channels/{guild.id}/{thread_id}/{outcome.reply.message_id}"
    corner = server.create_channel(guild, "mods-corner")
    ovi = world.member("ovi")  # Manage Messages through an overwrite for him in #mods-corner
    server.set_overwrite(corner, ovi, allow=MANAGE)
    hana = world.member("hana")  # ... through an overwrite for a role of hers
    helpers = server.create_role(guild, "helpers")
    server.give_role(guild, hana, helpers)
    server.set_overwrite(corner, helpers, allow=MANAGE)
    await _overwrites_seen(world, corner.id, 2)
    uploads = len([r for r in server.requests if r.files])

    for who in (ovi, hana):
        for name, sub, options in [*SERVER_WIDE, ("stance", "relabel", {"message": link, "label": "fair"})]:
            result = await _run(world, corner.id, who, name, sub, **options)
            # Discord says the member has Manage Messages here, and shows them /config and /digest here ...
            assert int(result.interaction["member"]["permissions"]) & MANAGE.value, (who.name, name, sub)
            # ... but the bot goes by the member's roles in the server
            assert result.ephemeral and "for moderators" in text_of(result), (who.name, name, sub, text_of(result))
        for name, sub, focused, options in [
            ("stance", "export", "prompt", {"prompt": ""}),
            ("config", "timezone", "name", {"name": "Europe/Ber"}),
            ("stance", "relabel", "label", {"message": link, "label": ""}),
            ("digest", "now", "prompt", {"prompt": "all"}),
        ]:
            choices = await _choices(world, corner.id, who, name, sub, focused, **options)
            assert choices.choices == [], (who.name, name, sub)
        # elsewhere Discord does not even offer the commands with default permissions
        with pytest.raises(PermissionError):
            await _run(world, world.channel.id, who, "config", "timezone", name="Europe/Berlin")
        refused = await _run(world, world.channel.id, who, "stance", "export", prompt="alliance")
        assert "for moderators" in text_of(refused)

    repo = repo_of(world)
    assert await repo.guilds.guild_timezone(guild.id) is None
    assert await repo.prompts.prompt_state("alliance", guild.id) == "open"
    assert await repo.prompts.prompt_state("defense", guild.id) == "unposted"
    assert await _label(world, outcome.reply.message_id) == outcome.result.label
    assert await repo.moderation.audit_recent(guild.id) == []
    assert len([r for r in server.requests if r.files]) == uploads  # no export, no digest chart
    assert server.bot_messages(corner.id) == []

    # Manage Messages from the member's roles works in that channel, even where an overwrite takes it away
    mod = world.moderator
    server.set_overwrite(corner, mod, deny=MANAGE)
    await _overwrites_seen(world, corner.id, 3)
    offered = await _choices(world, corner.id, mod, "stance", "export", "prompt", prompt="all")
    assert [c["value"] for c in offered.choices] == ["alliance"]
    exported = await _run(world, corner.id, mod, "stance", "export", prompt="alliance", format="json")
    assert "1 replies on **alliance**" in text_of(exported)
    closed = await _run(world, corner.id, mod, "prompt", "close", prompt="alliance")
    assert "Closed **alliance**" in text_of(closed)
    with pytest.raises(PermissionError):  # Discord hides /config where the member lacks Manage Messages
        await _run(world, corner.id, mod, "config", "timezone", name="Europe/Berlin")
    zone = await _run(world, world.channel.id, mod, "config", "timezone", name="Europe/Berlin")
    assert "Time zone set to **Europe/Berlin**" in text_of(zone)
    assert await repo.guilds.guild_timezone(guild.id) == "Europe/Berlin"


async def test_the_moderator_role_is_enough_without_manage_messages(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> None:
    guild, channel, moderator = new_guild(server)
    stance_mods = server.create_role(guild, "Stance mods")
    judy = server.create_member(guild, "judy")
    server.give_role(guild, judy, stance_mods)
    env = {"STANCEBOT_BOT_MODERATOR_ROLE": "Stance mods"}
    async with bot_on(server, encoder, build_dir, db_url, guild, channel, moderator, {"judy": judy}, **env) as world:
        thread_id = await post_prompt(world)
        outcome = await world.reply(thread_id, "maya", UNFAIR)
        maya = world.member("maya")
        result = await world.slash(judy, "prompt", "post", prompt="defense")
        assert not int(result.interaction["member"]["permissions"]) & MANAGE.value
        assert "Posted **defense**" in text_of(result)
        link = f"https://discord.com/channels/{guild.id}/{thread_id}/{outcome.reply.message_id}"
        labels = await world.server.autocomplete(
            guild,
            channel.id,
            judy,
            "stance",
            subcommand="relabel",
            focused="label",
            options={"message": link, "label": ""},
        )
        assert {c["value"] for c in labels.choices} == {"unfair", "fair", "mutual_benefit", "unclear"}
        relabelled = await world.slash(judy, "stance", "relabel", message=link, label="fair")
        assert "`fair`" in text_of(relabelled)
        assert [r.actor_id for r in await repo_of(world).moderation.audit_recent(guild.id)] == [judy.id]
        refused = await world.slash(maya, "stance", "relabel", message=link, label="unfair")
        assert "for moderators" in text_of(refused)
        assert await _label(world, outcome.reply.message_id) == "fair"
