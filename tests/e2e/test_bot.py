"""End to end: the real discord.py client against the loopback Discord server, real model, real database."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from bot.assets import shipped_models_dir
from bot.core.encoder import SentenceEncoder
from bot.core.shipped import ModelStore
from bot.runtime import build_runtime
from bot.sandbox.server import LoopbackDiscord
from bot.storage.repository import Repository
from tests.e2e.conftest import ACCEPTANCE_REPLIES, World, e2e_settings, post_prompt, running_bot


def _all_text(result: Any) -> str:
    parts = [result.content or ""] + [f.get("content") or "" for f in result.followups]
    return " ".join(parts)


def _repo(world: World) -> Repository:
    return world.runtime.services.repo


def _tally_counts(result: Any) -> dict[str, int]:
    table = result.embeds[0]["description"].strip("`\n").splitlines()
    counts = {}
    for line in table[1:-1]:
        label, count, *_ = line.split()
        counts[label] = int(count)
    return counts


async def test_post_reply_classify_store_tally(world: World) -> None:
    thread_id = await post_prompt(world)
    post = await world.bot.post_for_thread(thread_id)  # type: ignore[attr-defined]
    prompt_message = next(m for m in world.server.messages(world.channel.id) if int(m["id"]) == post.message_id)
    embed = prompt_message["embeds"][0]
    assert embed["title"] == "Is the U.S.-Japan alliance unfair to the U.S.?"
    assert {"`unfair`", "`fair`", "`mutual_benefit`"} <= {f["name"] for f in embed["fields"]}
    assert thread_id in world.server.threads

    for author, text, expected in ACCEPTANCE_REPLIES:
        outcome = await world.reply(thread_id, author, text)
        assert outcome.result.label == expected, (text, outcome.result)
        stored = await _repo(world).tallies.stance_of(outcome.reply.message_id)
        assert stored is not None
        assert stored.label == expected
        assert stored.model_version == ModelStore(shipped_models_dir()).entry("alliance").version  # the shipped model

    result = await world.server.slash(
        world.guild,
        world.channel.id,
        world.member("maya"),
        "stance",
        subcommand="tally",
        options={"prompt": "alliance"},
    )
    assert result.ephemeral
    assert _tally_counts(result) == {"unfair": 1, "fair": 1, "mutual_benefit": 1, "unclear": 0}


async def test_the_same_gateway_event_twice_counts_once(world: World) -> None:
    thread_id = await post_prompt(world)
    outcome = await world.reply(thread_id, "maya", "Japan should pay way more, we protect them for free")
    message = world.server.messages(thread_id)[-1]
    assert int(message["id"]) == outcome.reply.message_id
    await world.server.dispatch("MESSAGE_CREATE", message)
    await world.server.dispatch("MESSAGE_CREATE", message)
    # a later reply proves the duplicates were processed (events are handled in order)
    await world.reply(thread_id, "kenji", "Japan already pays billions for the bases, it's fair")
    assert await _repo(world).tallies.count_replies() == 2
    tally = await _repo(world).tallies.tally(world.runtime.services.catalog.get("alliance"), world.guild.id)
    assert tally.total == 2


async def test_non_moderator_is_refused(world: World) -> None:
    result = await world.server.slash(
        world.guild, world.channel.id, world.member("maya"), "prompt", subcommand="post", options={"prompt": "alliance"}
    )
    assert result.ephemeral
    assert "for moderators" in _all_text(result)
    assert world.server.bot_messages(world.channel.id) == []
    assert await _repo(world).prompts.open_posts() == []


async def test_unknown_prompt_gets_a_clear_message(world: World) -> None:
    result = await world.server.slash(
        world.guild, world.channel.id, world.moderator, "prompt", subcommand="post", options={"prompt": "nope"}
    )
    assert "Unknown prompt 'nope'. Known prompts: alliance, defense." in _all_text(result)


async def test_mass_mentions_never_ping(world: World) -> None:
    world.runtime.services.settings = world.runtime.services.settings.model_copy(
        update={"bot": world.runtime.services.settings.bot.model_copy(update={"react_to_replies": True})}
    )
    thread_id = await post_prompt(world)
    outcome = await world.reply(thread_id, "sam", "@everyone <@123456789012345678> Japan should pay way more!")
    assert outcome.result.label in {"unfair", "unclear"}
    await world.server.slash(
        world.guild, world.channel.id, world.member("sam"), "stance", subcommand="tally", options={"prompt": "alliance"}
    )
    sent = [
        r
        for r in world.server.requests
        if r.method in {"POST", "PATCH"}
        and isinstance(r.json, dict)
        and ("content" in r.json or "embeds" in r.json or "data" in r.json)
    ]
    assert sent, "the bot sent nothing"
    for request in sent:
        body = request.json.get("data", request.json) if "type" in request.json else request.json
        if not isinstance(body, dict) or not ({"content", "embeds"} & body.keys()):
            continue
        allowed = body.get("allowed_mentions")
        assert allowed is not None, f"{request.method} {request.path} has no allowed_mentions"
        assert allowed.get("parse") == [], f"{request.method} {request.path} lets {allowed} ping"
        assert not allowed.get("users")
        assert not allowed.get("roles")


async def test_huge_and_emoji_only_replies_are_unclear_and_kept(world: World) -> None:
    thread_id = await post_prompt(world)
    huge = "Japan should pay more. " * 870  # 20,010 characters
    emoji = "🇯🇵🤝🇺🇸🔥"
    big = await world.reply(thread_id, "ben", huge)
    small = await world.reply(thread_id, "olek", emoji)
    assert small.result.label == "unclear"
    assert small.result.reason == "no words (emoji or symbols only)"
    assert big.result.label in {"unfair", "unclear"}
    stored = await _repo(world).writes.pending_after(0)
    assert stored == []  # both classified, none left pending
    assert await _repo(world).tallies.count_replies() == 2


async def test_a_bot_that_never_connected_closes_cleanly(
    db_url: str, build_dir: Path, encoder: SentenceEncoder
) -> None:
    """E.g. ``stancebot run`` stopped before login: discord.py's AutoShardedClient.close() fails there on its own."""
    runtime = await build_runtime(e2e_settings(db_url, build_dir), encoder=encoder)
    await runtime.aclose()
    assert not runtime.bot.is_ready()


async def test_the_start_up_heap_is_frozen_while_running_and_given_back_on_close(
    server: LoopbackDiscord, db_url: str, build_dir: Path, encoder: SentenceEncoder
) -> None:
    """A full garbage collection over the libraries and the model stalled the event loop ~150 ms."""
    gc.unfreeze()
    async with running_bot(e2e_settings(db_url, build_dir), server, encoder=encoder) as runtime:
        assert gc.get_freeze_count() > 50_000  # discord.py, SQLAlchemy, the model's libraries
        assert runtime.bot._heap_frozen
    assert gc.get_freeze_count() == 0
    async with running_bot(
        e2e_settings(db_url, build_dir, STANCEBOT_GENERAL_FREEZE_GC="false"), server, encoder=encoder
    ):
        assert gc.get_freeze_count() == 0
