"""End to end: digests through the real discord.py client, the loopback server, the real model and database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.cogs.digest import Digests
from bot.core.encoder import SentenceEncoder
from bot.sandbox.server import LoopbackDiscord
from tests.e2e.conftest import World, e2e_settings, post_prompt, running_bot

PNG = b"\x89PNG\r\n\x1a\n"
MASS_MENTION = "@everyone <@123> Japan should pay way more, we protect them for free"


class Clock:
    """The bot's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _with_digests(world: World, clock: Clock | None = None) -> Digests:
    """The digest cog on the running bot (loaded here until it is in ``bot.app.EXTENSIONS``)."""
    if clock is not None:
        world.runtime.services.clock = clock
    bot = world.runtime.bot
    for ext in ("bot.cogs.digest", "bot.cogs.guild_config"):
        if ext not in bot.extensions:
            await bot.load_extension(ext)
            await bot.tree.sync()
    cog: Any = bot.get_cog("Digests")
    assert cog is not None  # (load_extension imports the module afresh, so no isinstance check)
    # A pass the scheduler began at start-up (real clock) finishes before the test goes on with its fake clock.
    await cog.scheduler.run_due()
    return cog


def _sends(server: LoopbackDiscord, method: str = "POST") -> list[Any]:
    return [r for r in server.requests if r.method == method and isinstance(r.json, dict)]


def _assert_pings_nobody(body: dict[str, Any]) -> None:
    allowed = body.get("allowed_mentions")
    assert allowed is not None, "no allowed_mentions in the payload"
    assert not allowed.get("parse"), allowed
    assert not allowed.get("users") and not allowed.get("roles") and not allowed.get("replied_user")


async def test_digest_now_posts_embed_with_png_and_pings_nobody(world: World) -> None:
    await _with_digests(world)
    thread_id = await post_prompt(world)
    quoted = await world.reply(thread_id, "sam", MASS_MENTION)
    assert quoted.result.label == "unfair", quoted.result
    await world.reply(thread_id, "kenji", "Japan already pays billions for the bases, it's fair")
    await world.reply(thread_id, "lucas", "Both countries gain, the bases keep Asia stable")

    before = len(world.server.requests)
    result = await world.server.slash(
        world.guild, world.channel.id, world.moderator, "digest", subcommand="now", options={"prompt": "alliance"}
    )
    assert not result.ephemeral
    [message] = result.followups
    [embed] = message["embeds"]
    assert embed["title"] == "Weekly digest: Is the U.S.-Japan alliance unfair to the U.S.?"
    assert embed["image"]["url"].endswith("digest.png")
    assert "3 replies from 3 members this week" in embed["description"]
    assert embed["footer"]["text"].startswith("Preview: this week so far · model ")
    [attachment] = message["attachments"]
    assert attachment["filename"] == "digest.png"

    [upload] = [r for r in world.server.requests[before:] if r.files]
    [(name, data)] = upload.files
    assert name == "digest.png" and data.startswith(PNG)
    _assert_pings_nobody(upload.json)
    unfair = next(f for f in embed["fields"] if "`unfair`" in f["name"])
    assert "@\u200beveryone @user Japan should pay way more" in unfair["value"]
    assert "<@123>" not in str(embed) and "@everyone" not in str(embed)
    assert f"/{thread_id}/{quoted.reply.message_id})" in unfair["value"]  # jump link to the quoted reply


async def test_scheduled_digest_posts_once_across_a_restart(
    world: World, db_url: str, build_dir: Path, encoder: SentenceEncoder
) -> None:
    clock = Clock(datetime(2026, 3, 18, 12, 0, tzinfo=UTC))  # Wednesday
    cog = await _with_digests(world, clock)
    digest_channel = world.server.create_channel(world.guild, "digests")
    await world.server.slash(
        world.guild, world.channel.id, world.moderator, "config", subcommand="timezone",
        options={"name": "Europe/Berlin"},
    )  # fmt: skip
    result = await world.server.slash(
        world.guild,
        world.channel.id,
        world.moderator,
        "digest",
        subcommand="schedule",
        options={"prompt": "alliance", "channel": digest_channel, "weekday": 0, "time": "09:00"},
    )
    assert result.ephemeral
    assert "every Monday at 09:00 (Europe/Berlin)" in result.content
    assert f"<t:{int(datetime(2026, 3, 23, 8, 0, tzinfo=UTC).timestamp())}:F>" in result.content
    thread_id = await post_prompt(world)
    await world.reply(thread_id, "maya", MASS_MENTION)

    clock.now = datetime(2026, 3, 23, 8, 0, 5, tzinfo=UTC)  # Monday 09:00:05 in Berlin
    await cog.scheduler.run_due()
    [posted] = world.server.bot_messages(digest_channel.id)
    assert posted["embeds"][0]["footer"]["text"].startswith("Stancebot digest #")
    assert posted["attachments"][0]["filename"] == "digest.png"
    upload = next(r for r in world.server.requests if r.files and r.path.endswith(f"/{digest_channel.id}/messages"))
    _assert_pings_nobody(upload.json)

    # A second bot process on the same database (a restart, or two started by mistake), mid-week.
    await world.runtime.aclose()
    clock.now += timedelta(days=3)
    settings = e2e_settings(db_url, build_dir)
    async with running_bot(settings, world.server, encoder=encoder, clock=clock) as rt:
        for ext in ("bot.cogs.digest", "bot.cogs.guild_config"):
            if ext not in rt.bot.extensions:
                await rt.bot.load_extension(ext)
        restarted: Any = rt.bot.get_cog("Digests")
        assert await restarted.scheduler.run_due() == []
        assert len(world.server.bot_messages(digest_channel.id)) == 1
        listing = await restarted.repo.schedules.schedules(world.guild.id)
        assert [s.next_due_at for s in listing] == [datetime(2026, 3, 30, 7, 0, tzinfo=UTC)]


async def test_prompt_schedule_list_and_cancel(world: World) -> None:
    clock = Clock(datetime(2026, 3, 18, 12, 0, tzinfo=UTC))
    cog = await _with_digests(world, clock)
    result = await world.server.slash(
        world.guild,
        world.channel.id,
        world.moderator,
        "prompt",
        subcommand="schedule",
        options={"prompt": "defense", "time": "18:30"},
    )
    assert result.ephemeral and "**defense** will be posted" in result.content
    await world.server.slash(
        world.guild, world.channel.id, world.moderator, "digest", subcommand="schedule",
        options={"prompt": "alliance", "channel": world.channel, "weekday": 4, "time": "17:00", "period": "daily"},
    )  # fmt: skip
    listing = await world.server.slash(world.guild, world.channel.id, world.moderator, "digest", subcommand="list")
    assert "`prompt:1` post **defense**" in listing.content
    assert "**alliance** daily" in listing.content

    with pytest.raises(PermissionError):  # Discord hides /digest from members without Manage Messages
        await world.server.slash(
            world.guild, world.channel.id, world.member("maya"), "digest", subcommand="list", options={}
        )
    cancelled = await world.server.slash(
        world.guild, world.channel.id, world.moderator, "digest", subcommand="cancel", options={"what": "alliance"}
    )
    assert "Stopped the daily digest of alliance" in cancelled.content

    clock.now = datetime(2026, 3, 18, 18, 30, tzinfo=UTC)  # the prompt's time (UTC: no zone set)
    before = len(world.server.threads)
    await cog.scheduler.run_due()
    assert len(world.server.threads) == before + 1
    await cog.scheduler.run_due()
    assert len(world.server.threads) == before + 1
    post = await world.runtime.bot.post_for_thread(next(reversed(world.server.threads)))  # type: ignore[attr-defined]
    assert post is not None and post.prompt_slug == "defense"
    listing = await world.server.slash(world.guild, world.channel.id, world.moderator, "digest", subcommand="list")
    assert "Nothing is scheduled" in listing.content

    bad_time = await world.server.slash(
        world.guild, world.channel.id, world.moderator, "digest", subcommand="schedule",
        options={"prompt": "alliance", "channel": world.channel, "weekday": 0, "time": "9pm"},
    )  # fmt: skip
    assert bad_time.ephemeral and "use 24-hour HH:MM" in bad_time.content
    bad_zone = await world.server.slash(
        world.guild, world.channel.id, world.moderator, "config", subcommand="timezone", options={"name": "Mars/Base"}
    )
    assert "IANA time zone" in bad_zone.content
