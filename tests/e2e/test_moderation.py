"""End to end: counting rules, declared stances, corrections, the review queue, permissions and prompt
management, through the real discord.py client and the loopback server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.app import EXTENSIONS
from bot.core.encoder import SentenceEncoder
from bot.sandbox.server import LoopbackDiscord
from tests.e2e.conftest import (
    FAIR,
    UNFAIR,
    UNSURE,
    World,
    bot_on,
    bot_post_in,
    new_guild,
    post_prompt,
    repo_of,
    slash,
    tally_of,
    text_of,
    until,
    wait_event,
)

# -- counting rules --------------------------------------------------------------------------------------------


async def test_edit_reclassifies_and_delete_retracts(world: World) -> None:
    thread_id = await post_prompt(world)
    first = await world.reply(thread_id, "maya", UNFAIR)
    assert first.result.label == "unfair"
    assert await tally_of(world) == {"unfair": 1}
    mid = first.reply.message_id

    edited = await wait_event(
        world,
        "stance_recorded",
        lambda o: o.edited and o.reply.message_id == mid,
        world.server.edit_message(thread_id, mid, FAIR),
    )
    assert edited.result.label == "fair"
    stored = await repo_of(world).tallies.stance_of(mid)
    assert stored is not None and stored.label == "fair" and stored.counted
    assert await tally_of(world) == {"fair": 1}

    await wait_event(world, "reply_retracted", lambda m: m == mid, world.server.delete_message(thread_id, mid))
    assert await tally_of(world) == {}
    assert await repo_of(world).tallies.count_replies([mid]) == 1  # the row stays (history), it just no longer counts


async def test_member_changes_stance_and_moves_in_the_tally(world: World) -> None:
    thread_id = await post_prompt(world)
    await world.reply(thread_id, "maya", UNFAIR)
    await world.reply(thread_id, "kenji", FAIR)
    assert await tally_of(world) == {"unfair": 1, "fair": 1}
    await world.reply(thread_id, "maya", FAIR)  # maya changes her mind
    assert await tally_of(world) == {"fair": 2}
    await world.reply(thread_id, "maya", "anyone tried the new Toyota hybrid?")  # no stance: she stays "fair"
    assert await tally_of(world) == {"fair": 2}


async def test_bots_and_webhooks_never_count(sqlite_world: World) -> None:
    world = sqlite_world
    thread_id = await post_prompt(world)
    robot = world.server.create_member(world.guild, "robot", bot=True)
    await world.server.send_message(thread_id, robot, UNFAIR)
    hook = world.server.world.build_message(
        world.server.world.channels[thread_id], world.member("maya").user, UNFAIR, extra={"webhook_id": "42"}
    )
    await world.server.dispatch("MESSAGE_CREATE", hook)
    await world.reply(thread_id, "kenji", FAIR)  # processed after the bot's message (events are in order)
    assert await tally_of(world) == {"fair": 1}
    assert await repo_of(world).tallies.count_replies() == 1


# -- declared stances --------------------------------------------------------------------------------------------


async def test_declared_stance_buttons_override_and_compare(sqlite_world: World) -> None:
    world = sqlite_world
    thread_id = await post_prompt(world)
    post = await world.bot.post_for_thread(thread_id)  # type: ignore[attr-defined]
    await world.reply(thread_id, "maya", UNFAIR)
    maya = world.member("maya")
    result = await world.server.click(world.guild, world.channel.id, maya, post.message_id, "stancebot:declare:fair")
    assert result.ephemeral and "now `fair`" in text_of(result)
    assert await tally_of(world) == {"fair": 1}  # declared overrides the model for maya

    shown = await slash(world, maya, "stance", "tally", prompt="alliance")
    [field] = [f for f in shown.embeds[0]["fields"] if f["name"] == "Model vs declared stances"]
    assert "agree: 0% of 1" in field["value"]

    again = await world.server.click(world.guild, world.channel.id, maya, post.message_id, "stancebot:declare:fair")
    assert "took back" in text_of(again)
    assert await tally_of(world) == {"unfair": 1}


# -- corrections -----------------------------------------------------------------------------------------------


async def test_relabel_writes_audit_row_moves_tally_and_logs(world: World) -> None:
    modlog = world.server.create_channel(world.guild, "mod-log")
    result = await slash(world, world.moderator, "audit", "channel", channel=modlog)
    assert "will be posted in" in text_of(result), text_of(result)

    thread_id = await post_prompt(world)
    outcome = await world.reply(thread_id, "maya", UNFAIR)
    link = f"https://discord.com/channels/{world.guild.id}/{thread_id}/{outcome.reply.message_id}"

    choices = await world.server.autocomplete(
        world.guild,
        world.channel.id,
        world.moderator,
        "stance",
        subcommand="relabel",
        focused="label",
        options={"message": link, "label": "f"},
    )
    assert [c["value"] for c in choices.choices] == ["unfair", "fair", "mutual_benefit"]

    bad = await slash(world, world.moderator, "stance", "relabel", message=link, label="nonsense")
    assert "is not a stance of prompt 'alliance'" in text_of(bad)

    before = len(world.server.requests)
    done = await slash(world, world.moderator, "stance", "relabel", message=link, label="mutual_benefit")
    assert done.ephemeral and "`unfair` → `mutual_benefit`" in text_of(done)
    assert await tally_of(world) == {"mutual_benefit": 1}

    [entry] = await repo_of(world).moderation.audit_recent(world.guild.id, 1)
    assert (entry.action, entry.from_label, entry.to_label) == ("relabel", "unfair", "mutual_benefit")
    assert entry.actor_id == world.moderator.id and entry.subject_id == world.member("maya").id

    logged = await bot_post_in(world, modlog.id, before)
    assert "relabel alliance: unfair -> mutual_benefit" in logged["embeds"][0]["title"]

    corrections = await repo_of(world).moderation.corrections("alliance")
    assert [(c.text, c.label) for c in corrections] == [(UNFAIR, "mutual_benefit")]


async def test_review_button_works_after_a_restart(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> None:
    guild, channel, moderator = new_guild(server)
    review = server.create_channel(guild, "review")
    members: dict[str, Any] = {}
    env = {"STANCEBOT_MODERATION_REVIEW_BELOW": "1.0"}  # every model stance goes to review
    async with bot_on(server, encoder, build_dir, db_url, guild, channel, moderator, members, **env) as world:
        await slash(world, moderator, "review", "channel", channel=review)
        thread_id = await post_prompt(world)
        before = len(server.requests)
        outcome = await world.reply(thread_id, "maya", UNSURE)
        posted = await bot_post_in(world, review.id, before)
        repo = repo_of(world)
        item = await repo.moderation.open_review_for_reply(outcome.reply.id)
        assert item is not None

        async def located() -> bool:
            info = await repo.moderation.review_item(item.id)
            return info is not None and info.review_message_id is not None

        await until(located)
        buttons = [c["custom_id"] for row in posted["components"] for c in row["components"]]
        assert f"stancebot:review:{item.id}:fair" in buttons and f"stancebot:review-skip:{item.id}" in buttons

    async with bot_on(server, encoder, build_dir, db_url, guild, channel, moderator, members, **env) as world:
        message_id = int(posted["id"])
        refused = await server.click(guild, review.id, world.member("maya"), message_id, buttons[0])
        assert "for moderators" in text_of(refused)

        pressed = await server.click(guild, review.id, moderator, message_id, f"stancebot:review:{item.id}:fair")
        assert pressed.message is not None and pressed.message["components"] == []
        assert "Labelled `fair`" in pressed.message["embeds"][0]["description"]
        assert UNSURE not in json.dumps(pressed.message)  # the handled message no longer quotes the reply

        stored = await repo_of(world).tallies.stance_of(outcome.reply.message_id)
        assert stored is not None and (stored.label, stored.source) == ("fair", "moderator")
        [entry] = await repo_of(world).moderation.audit_recent(guild.id, 1)
        assert (entry.action, entry.to_label, entry.actor_id) == ("review", "fair", moderator.id)
        assert await tally_of(world) == {"fair": 1}


async def test_review_next_walks_the_queue(sqlite_world: World) -> None:
    world = sqlite_world
    repo = repo_of(world)
    repo.review_below = 1.0  # every model stance goes to review (the shipped models can be surer than 0.999)
    thread_id = await post_prompt(world)
    await world.reply(thread_id, "maya", UNSURE)
    await world.reply(thread_id, "kenji", FAIR)
    first = await slash(world, world.moderator, "review", "next")
    assert first.ephemeral and first.embeds[0]["description"] == UNSURE
    item = int(first.embeds[0]["footer"]["text"].split("#")[1].split()[0])
    skipped = await world.server.click(
        world.guild, world.channel.id, world.moderator, int(first.message["id"]), f"stancebot:review-skip:{item}"
    )
    assert skipped.message is not None and skipped.message["embeds"][0]["description"] == FAIR
    assert await repo.moderation.review_queue_size(world.guild.id) == 1


# -- permissions -----------------------------------------------------------------------------------------------

MODERATOR_COMMANDS = [
    ("prompt", "post", {"prompt": "alliance"}),
    ("prompt", "add", {"name": "tariffs"}),
    ("prompt", "close", {"prompt": "alliance"}),
    ("prompt", "reopen", {"prompt": "alliance"}),
    ("prompt", "reclassify", {"prompt": "alliance"}),
    ("stance", "relabel", {"message": "123456789012345678", "label": "fair"}),
    ("stance", "export", {"prompt": "alliance"}),
    ("review", "next", {}),
    ("review", "channel", {}),
    ("audit", "channel", {}),
    ("audit", "recent", {}),
]


async def test_a_member_is_refused_every_moderator_command(world: World) -> None:
    assert set(EXTENSIONS) <= set(world.bot.extensions)  # every cog loaded (a broken one would only be logged)
    maya = world.member("maya")
    synced = {
        (c["name"], o["name"])
        for c in world.server.commands
        for o in c.get("options") or []
        if o["type"] == 1  # subcommands
    }
    for name, sub, options in MODERATOR_COMMANDS:
        assert (name, sub) in synced
        result = await slash(world, maya, name, sub, **options)
        assert result.ephemeral, (name, sub)
        assert "for moderators" in text_of(result), (name, sub, text_of(result))
        assert result.modal is None
    assert world.server.bot_messages(world.channel.id) == []
    assert await repo_of(world).moderation.audit_recent(world.guild.id) == []

    # the configured moderator role is enough, without Manage Messages
    judy = world.server.create_member(world.guild, "judy", permissions=discord.Permissions(add_reactions=True))
    services = world.runtime.services
    services.settings = services.settings.model_copy(
        update={"bot": services.settings.bot.model_copy(update={"moderator_role": "judy-role"})}
    )
    await asyncio.sleep(0.2)
    allowed = await slash(world, judy, "review", "next")
    assert "The review queue is empty." in text_of(allowed)


async def test_unexpected_errors_apologise_and_log_the_trace(
    sqlite_world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    world = sqlite_world

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(repo_of(world).tallies, "standings", broken)
    result = await slash(world, world.member("maya"), "stance", "tally", prompt="alliance")
    assert result.ephemeral
    assert text_of(result) == "Sorry, something went wrong on my side. The moderators can find the details in the log."
    [record] = [r for r in caplog.records if r.name == "bot.cogs.errors"]
    assert "Command stance tally failed" in record.getMessage() and record.exc_info is not None
    assert "database on fire" not in text_of(result)


async def test_missing_bot_permission_is_named(sqlite_world: World) -> None:
    world = sqlite_world
    hidden = world.server.create_channel(world.guild, "hidden")
    bot_member = world.guild.members[world.server.bot_user.id]
    for role_id in (world.guild.id, bot_member.role_ids[0]):  # @everyone and the bot's own role
        role = world.guild.roles[role_id]
        role.permissions &= ~discord.Permissions(embed_links=True).value
        await world.server.dispatch("GUILD_ROLE_UPDATE", {"guild_id": str(world.guild.id), "role": role.payload()})
    await asyncio.sleep(0.2)
    result = await slash(world, world.moderator, "review", "channel", channel=hidden)
    assert "I need these permissions" in text_of(result) and "Embed Links" in text_of(result)


# -- prompt management -----------------------------------------------------------------------------------------

GOOD_LABELS = (
    "raise: Tariffs should go up | raise them, protect our jobs; higher tariffs now\n"
    "cut: Tariffs should go down | cut tariffs, they are a tax on us; free trade please"
)
BAD_FORMS = [
    ({"labels": ": no name here\ncut: Tariffs should go down"}, "the label name before `:` is empty"),
    ({"labels": "\n".join(f"l{i}x: label number {i}" for i in range(11))}, "has 12 labels (unclear included)"),
    ({"labels": "raise: up\nraise: up again"}, "duplicate label names: raise"),
    ({"question": "x" * 5000}, "'question' is 5000 characters; the limit is 300"),
]


async def _open_form(world: World, name: str) -> None:
    opened = await slash(world, world.moderator, "prompt", "add", name=name)
    assert opened.modal is not None and opened.modal["custom_id"] == "stancebot:prompt-add"


def _form(**changes: str) -> dict[str, str]:
    values = {
        "title": "Tariffs",
        "question": "Should tariffs go up or down?",
        "context": "The government is reviewing import tariffs.",
        "labels": GOOD_LABELS,
        "source": "",
    }
    return values | changes


async def test_prompt_add_refuses_bad_input_and_stores_nothing(sqlite_world: World) -> None:
    world = sqlite_world
    for changes, message in BAD_FORMS:
        await _open_form(world, "tariffs")
        result = await world.server.submit_modal(
            world.guild, world.channel.id, world.moderator, "stancebot:prompt-add", _form(**changes)
        )
        assert result.ephemeral
        assert message in text_of(result), (message, text_of(result))
    assert "tariffs" not in world.runtime.services.catalog
    assert [p.slug for p in await repo_of(world).prompts.prompt_overview(world.guild.id)] == ["alliance", "defense"]

    taken = await slash(world, world.moderator, "prompt", "add", name="alliance")
    assert "already exists" in text_of(taken) and taken.modal is None


async def test_prompt_add_list_post_classify_close_reopen(sqlite_world: World) -> None:
    world = sqlite_world
    await _open_form(world, "tariffs")
    added = await world.server.submit_modal(
        world.guild, world.channel.id, world.moderator, "stancebot:prompt-add", _form()
    )
    assert "Added **tariffs**" in text_of(added)

    choices = await world.server.autocomplete(
        world.guild, world.channel.id, world.moderator, "prompt", subcommand="post", focused="prompt",
        options={"prompt": "tar"},
    )  # fmt: skip
    assert [c["value"] for c in choices.choices] == ["tariffs"]
    other_guild, other_channel, other_mod = new_guild(world.server)
    await asyncio.sleep(0.3)
    elsewhere = await world.server.autocomplete(
        other_guild, other_channel.id, other_mod, "prompt", subcommand="post", focused="prompt",
        options={"prompt": "tar"},
    )  # fmt: skip
    assert elsewhere.choices == []

    thread_id = await post_prompt(world, "tariffs")
    outcome = await world.reply(thread_id, "maya", "raise the tariffs, protect our jobs")
    # a prompt a server adds is read by the general model
    assert outcome.result.label == "raise" and outcome.model_version.startswith("general:")

    listed = await slash(world, world.moderator, "prompt", "list")
    assert "`tariffs` Tariffs · open · 1 posts · 1 counted · added here" in listed.embeds[0]["description"]

    closed = await slash(world, world.moderator, "prompt", "close", prompt="tariffs")
    assert "Closed **tariffs**" in text_of(closed)
    await world.server.send_message(thread_id, world.member("kenji"), "cut tariffs, they are a tax on us")
    await world.reply(await post_prompt(world), "olek", FAIR)  # a later event: the closed thread's was handled
    assert await repo_of(world).tallies.count_replies() == 2
    refused = await slash(world, world.member("kenji"), "stance", "submit", prompt="tariffs", text="cut them")
    assert "not open here" in text_of(refused)

    await slash(world, world.moderator, "prompt", "reopen", prompt="tariffs")
    later = await world.reply(thread_id, "kenji", "cut tariffs, they are a tax on us")
    assert later.result.label == "cut"
    assert await tally_of(world, "tariffs") == {"raise": 1, "cut": 1}
