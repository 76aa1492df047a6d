"""End to end: ``/stance mydata`` and ``/stance forget-me`` in a DM with the bot, by someone who left every server:
they reach (and delete) the data of every server. The rest of ``/stance`` answers there that it needs a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import FAIR, UNFAIR, World, new_guild, post_prompt, repo_of, tally_of, text_of


def _dm(world: World, who: Any, sub: str, **options: Any) -> Any:
    dm = world.server.dm_channel(who)
    return world.server.slash(None, dm.id, who.user, "stance", subcommand=sub, options=options or None)


async def test_mydata_and_forget_me_in_a_dm_cover_every_server(world: World) -> None:
    server = world.server
    guild, channel, moderator = new_guild(server, "Second guild")
    maya = world.member("maya")
    second = World(server, world.runtime, guild, channel, moderator, {"maya": server.join_guild(guild, maya)})
    first_thread, second_thread = await post_prompt(world), await post_prompt(second)
    await world.reply(first_thread, "maya", UNFAIR)
    await second.reply(second_thread, "maya", FAIR)
    await world.reply(first_thread, "kenji", FAIR)
    server.leave_guild(world.guild, maya)
    server.leave_guild(guild, second.members["maya"])

    mine = await _dm(world, maya, "mydata")
    assert "guild_id" not in mine.interaction and mine.interaction["context"] == 1  # a DM, as Discord sends it
    assert "2 replies" in text_of(mine)
    upload = next(r for r in reversed(server.requests) if r.files)
    data = json.loads(upload.files[0][1])
    replies = {(r["guild_id"], r["text"]) for r in data["replies"]}
    assert replies == {(str(world.guild.id), UNFAIR), (str(guild.id), FAIR)}

    # the commands that need a server say so, and offer no choices
    for sub, options in [("tally", {"prompt": "alliance"}), ("opt-out", {}), ("export", {"prompt": "alliance"})]:
        refused = await _dm(world, maya, sub, **options)
        assert "works in a server, not in direct messages" in text_of(refused), (sub, text_of(refused))
    dm = server.dm_channel(maya)
    choices = await server.autocomplete(
        None, dm.id, maya.user, "stance", subcommand="tally", focused="prompt", options={"prompt": ""}
    )
    assert choices.choices == []
    with pytest.raises(PermissionError, match="not available in DMs"):  # the guild-only groups are not offered
        await server.slash(None, dm.id, maya.user, "prompt", subcommand="list")

    asked = await _dm(world, maya, "forget-me")
    assert "deletes your 2 stored replies" in text_of(asked) and asked.message is not None
    buttons = {b["label"]: b["custom_id"] for row in asked.message["components"] for b in row["components"]}
    gone = await server.click(None, dm.id, maya.user, int(asked.message["id"]), buttons["Delete everything"])
    assert "removed 2 replies" in gone.content
    left = await repo_of(world).privacy.member_data(maya.id)
    assert left["replies"] == [] and left["declared_stances"] == []
    assert await tally_of(world) == {"fair": 1}  # kenji's stays
    assert await tally_of(second) == {}
