"""End to end: exports, forget-me, opt-out, the retention purge, and the bot without the message-content
intent, through the real discord.py client and the loopback server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import discord
from sqlalchemy import update

from bot.core.encoder import SentenceEncoder
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import sqlite_url
from bot.storage.models import Reply, utcnow
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
)

# -- export and privacy ----------------------------------------------------------------------------------------


async def _export(world: World, fmt: str = "json") -> list[dict[str, Any]]:
    result = await slash(world, world.moderator, "stance", "export", prompt="alliance", format=fmt)
    assert result.ephemeral
    [message] = result.followups
    [attachment] = message["attachments"]
    upload = next(r for r in reversed(world.server.requests) if r.files)
    [(name, data)] = upload.files
    assert name == attachment["filename"] == f"alliance-{world.guild.id}.{fmt}"
    return json.loads(data) if fmt == "json" else [{"csv": data.decode()}]


async def test_forget_me_removes_the_member_from_tally_and_export(world: World) -> None:
    thread_id = await post_prompt(world)
    post = await world.bot.post_for_thread(thread_id)  # type: ignore[attr-defined]
    maya, kenji = world.member("maya"), world.member("kenji")
    outcome = await world.reply(thread_id, "maya", UNFAIR)
    await world.reply(thread_id, "kenji", FAIR)
    await world.server.click(world.guild, world.channel.id, maya, post.message_id, "stancebot:declare:unfair")
    link = f"https://discord.com/channels/{world.guild.id}/{thread_id}/{outcome.reply.message_id}"
    await slash(world, world.moderator, "stance", "relabel", message=link, label="mutual_benefit")
    assert {row["author_id"] for row in await _export(world)} == {str(maya.id), str(kenji.id)}

    mine = await slash(world, maya, "stance", "mydata")
    upload = next(r for r in reversed(world.server.requests) if r.files)
    data = json.loads(upload.files[0][1])
    assert mine.ephemeral and data["replies"][0]["text"] == UNFAIR and data["declared_stances"][0]["label"] == "unfair"

    before = await tally_of(world)
    asked = await slash(world, maya, "stance", "forget-me")  # asks first, deletes nothing yet
    assert asked.ephemeral and "deletes your 1 stored replies" in text_of(asked) and asked.message is not None
    buttons = {b["label"]: b["custom_id"] for row in asked.message["components"] for b in row["components"]}
    assert set(buttons) == {"Delete everything", "Cancel"}
    kept = await world.server.click(world.guild, world.channel.id, maya, int(asked.message["id"]), buttons["Cancel"])
    assert kept.content == "Nothing was deleted." and await tally_of(world) == before != {"fair": 1}

    asked = await slash(world, maya, "stance", "forget-me")
    assert asked.message is not None
    buttons = {b["label"]: b["custom_id"] for row in asked.message["components"] for b in row["components"]}
    gone = await world.server.click(
        world.guild, world.channel.id, maya, int(asked.message["id"]), buttons["Delete everything"]
    )
    assert "removed 1 replies, 2 stances and 1 declared" in gone.content
    assert gone.message is not None and gone.message["components"] == []
    assert await tally_of(world) == {"fair": 1}
    nothing = await slash(world, maya, "stance", "forget-me")
    assert nothing.content == "I have no replies or stances of yours."
    assert [row["author_id"] for row in await _export(world)] == [str(kenji.id)]
    assert "Japan should pay" not in (await _export(world, "csv"))[0]["csv"]

    await slash(world, maya, "stance", "mydata")
    upload = next(r for r in reversed(world.server.requests) if r.files)
    after = json.loads(upload.files[0][1])
    assert after["replies"] == [] and after["declared_stances"] == [] and after["audit_entries_about_you"] == []
    audit = await repo_of(world).moderation.audit_recent(world.guild.id, 5)
    assert audit[0].action == "forget" and "1 replies, 2 stances, 1 declared" in (audit[0].detail or "")
    assert all(maya.id not in (e.actor_id, e.subject_id) for e in audit)


async def test_opt_out_stops_counting_and_opt_in_resumes(world: World) -> None:
    thread_id = await post_prompt(world)
    post = await world.bot.post_for_thread(thread_id)  # type: ignore[attr-defined]
    maya = world.member("maya")
    await world.reply(thread_id, "maya", UNFAIR)
    out = await slash(world, maya, "stance", "opt-out")
    assert "opted out" in text_of(out)
    assert await tally_of(world) == {}
    await world.server.send_message(thread_id, maya, FAIR)  # not stored
    await world.reply(thread_id, "kenji", FAIR)
    assert await repo_of(world).tallies.count_replies() == 2
    pressed = await world.server.click(world.guild, world.channel.id, maya, post.message_id, "stancebot:declare:fair")
    assert "opted out" in text_of(pressed)
    assert all(row["author_id"] != str(maya.id) for row in await _export(world))

    back = await slash(world, maya, "stance", "opt-in")
    assert "count again" in text_of(back)
    assert await tally_of(world) == {"unfair": 1, "fair": 1}


async def test_retention_purge_removes_old_text_and_review_messages(sqlite_world: World) -> None:
    world = sqlite_world
    review = world.server.create_channel(world.guild, "review")
    await slash(world, world.moderator, "review", "channel", channel=review)
    repo = repo_of(world)
    repo.review_below = 1.0  # every model stance goes to review (the shipped models can be surer than 0.999)
    thread_id = await post_prompt(world)
    before = len(world.server.requests)
    outcome = await world.reply(thread_id, "maya", UNSURE)
    await bot_post_in(world, review.id, before)

    async def located() -> bool:
        info = await repo.moderation.open_review_for_reply(outcome.reply.id)
        return info is not None and info.review_message_id is not None

    await until(located)
    async with repo.sessions() as s, s.begin():
        await s.execute(update(Reply).values(created_at=utcnow() - timedelta(days=40)))
    services = world.runtime.services
    services.settings = services.settings.model_copy(
        update={"privacy": services.settings.privacy.model_copy(update={"retention_days": 30})}
    )
    cog: Any = world.bot.get_cog("Privacy")
    assert await cog.purge_once() == 1
    assert world.server.bot_messages(review.id) == []  # the review message quoted the text: deleted too
    [row] = await repo.privacy.export_rows("alliance", world.guild.id)
    assert row.text is None and row.label is not None
    assert sum((await tally_of(world)).values()) == 1  # the stance still counts


# -- without the message-content intent ------------------------------------------------------------------------


async def test_without_message_content_intent_submit_mentions_and_buttons_count(
    encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> None:
    """The application lacks the intent but the settings ask for it: the bot detects it and connects without."""
    await _without_message_content(encoder, build_dir, db_url, configured=True)


async def test_message_content_intent_switched_off_in_the_settings(
    encoder: SentenceEncoder, build_dir: Path, tmp_path: Path
) -> None:
    await _without_message_content(encoder, build_dir, sqlite_url(tmp_path / "bot.db"), configured=False)


async def _without_message_content(encoder: SentenceEncoder, build_dir: Path, db_url: str, *, configured: bool) -> None:
    async with LoopbackDiscord(message_content_intent_allowed=False) as server:
        server.install()
        guild, channel, moderator = new_guild(server)
        env = {"STANCEBOT_BOT_MESSAGE_CONTENT_INTENT": "true" if configured else "false"}
        async with bot_on(server, encoder, build_dir, db_url, guild, channel, moderator, {}, **env) as world:
            assert not world.bot.message_content_enabled  # type: ignore[attr-defined]
            assert not server.sessions[-1].intents & discord.Intents(message_content=True).value
            thread_id = await post_prompt(world)
            maya = world.member("maya")

            shown = await slash(world, maya, "stance", "tally", prompt="alliance")
            assert "no message-content intent" in json.dumps(shown.embeds[0])

            result = await slash(world, maya, "stance", "submit", prompt="alliance", text=UNFAIR)
            assert result.ephemeral and "as `unfair`" in text_of(result)
            assert await tally_of(world) == {"unfair": 1}

            await server.send_message(thread_id, world.member("kenji"), FAIR)  # Discord hides its text: skipped
            mentioned = await world.reply(thread_id, "olek", FAIR, mentions_bot=True)
            assert mentioned.result.label == "fair" and mentioned.reply.content == FAIR
            assert await repo_of(world).tallies.count_replies() == 2

            post = await world.bot.post_for_thread(thread_id)  # type: ignore[attr-defined]
            await server.click(guild, channel.id, world.member("lucas"), post.message_id, "stancebot:declare:fair")
            assert await tally_of(world) == {"unfair": 1, "fair": 2}
