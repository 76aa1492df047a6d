"""Issue 6 end to end: counting rules, declared stances, corrections, the review queue, prompt management, privacy
and the bot without the message-content intent, through the real discord.py client and the loopback server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import discord
import pytest
from sqlalchemy import update

from bot.app import EXTENSIONS
from bot.core.encoder import SentenceEncoder
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import sqlite_url
from bot.storage.models import Reply, utcnow
from bot.storage.repository import Repository
from tests.e2e.conftest import World, e2e_settings, running_bot
from tests.e2e.test_bot import post_prompt

UNFAIR = "Japan should pay way more, we protect them for free"
FAIR = "Unfair? No way, Japan covers most of the cost of hosting U.S. troops."
UNSURE = "I guess maybe, not sure about the bases honestly"


# -- helpers ---------------------------------------------------------------------------------------------------


def text_of(result: Any) -> str:
    """Everything the bot said in answer to an interaction."""
    parts = [result.content or ""] + [f.get("content") or "" for f in result.followups]
    if result.message is None and isinstance(result.data, dict):
        parts.append(result.data.get("content") or "")
    return " ".join(parts)


def repo_of(world: World) -> Repository:
    return world.runtime.services.repo


async def tally_of(world: World, prompt: str = "alliance") -> dict[str, int]:
    """The stored tally, without zero rows."""
    definition = world.runtime.services.catalog.get(prompt)
    tally = await repo_of(world).tally(definition, world.guild.id)
    return {label: n for label, n in tally.counts.items() if n}


def slash(world: World, who: Any, command: str, sub: str, /, **options: Any) -> Any:
    """Run ``/command sub`` in the world's channel as ``who``."""
    return world.server.slash(world.guild, world.channel.id, who, command, subcommand=sub, options=options or None)


async def wait_event(world: World, event: str, check: Any, action: Any) -> Any:
    """Run ``action`` and wait for the bot to dispatch ``event`` passing ``check``."""
    waiter = asyncio.ensure_future(world.bot.wait_for(event, check=check, timeout=20))
    await action
    return await waiter


async def bot_post_in(world: World, channel_id: int, before: int) -> Any:
    """The first message the bot posts in ``channel_id`` after request number ``before``."""
    request = await world.server.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{channel_id}/messages"
        and world.server.requests.index(r) >= before,
        timeout=20,
    )  # fmt: skip
    return request.response


async def until(predicate: Any) -> None:
    """Poll an async predicate until it holds (at most 10 s)."""
    for _ in range(200):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the condition never held")


@asynccontextmanager
async def bot_on(
    server: LoopbackDiscord,
    encoder: SentenceEncoder,
    build_dir: Path,
    db_url: str,
    guild: Any,
    channel: Any,
    moderator: Any,
    members: dict[str, Any],
    **env: str,
) -> AsyncIterator[World]:
    """A bot with extra settings on an existing server, guild and database."""
    async with running_bot(e2e_settings(db_url, build_dir, **env), encoder, server) as runtime:
        yield World(server, runtime, guild, channel, moderator, members)


def new_guild(server: LoopbackDiscord) -> tuple[Any, Any, Any]:
    guild = server.create_guild("Test guild")
    channel = server.create_channel(guild, "debate")
    moderator = server.create_member(guild, "mod", permissions=discord.Permissions(manage_messages=True))
    return guild, channel, moderator


@pytest.fixture
async def sqlite_world(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, tmp_path: Path
) -> AsyncIterator[World]:
    """Like ``world``, on SQLite only: for tests where the database makes no difference."""
    guild, channel, moderator = new_guild(server)
    async with bot_on(server, encoder, build_dir, sqlite_url(tmp_path / "bot.db"), guild, channel, moderator, {}) as w:
        yield w


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
    stored = await repo_of(world).stance_of(mid)
    assert stored is not None and stored.label == "fair" and stored.counted
    assert await tally_of(world) == {"fair": 1}

    await wait_event(world, "reply_retracted", lambda m: m == mid, world.server.delete_message(thread_id, mid))
    assert await tally_of(world) == {}
    assert await repo_of(world).count_replies([mid]) == 1  # the row stays (history), it just no longer counts


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
    assert await repo_of(world).count_replies() == 1


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

    [entry] = await repo_of(world).audit_recent(world.guild.id, 1)
    assert (entry.action, entry.from_label, entry.to_label) == ("relabel", "unfair", "mutual_benefit")
    assert entry.actor_id == world.moderator.id and entry.subject_id == world.member("maya").id

    logged = await bot_post_in(world, modlog.id, before)
    assert "relabel alliance: unfair -> mutual_benefit" in logged["embeds"][0]["title"]

    corrections = await repo_of(world).corrections("alliance")
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
        item = await repo.open_review_for_reply(outcome.reply.id)
        assert item is not None

        async def located() -> bool:
            info = await repo.review_item(item.id)
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

        stored = await repo_of(world).stance_of(outcome.reply.message_id)
        assert stored is not None and (stored.label, stored.source) == ("fair", "moderator")
        [entry] = await repo_of(world).audit_recent(guild.id, 1)
        assert (entry.action, entry.to_label, entry.actor_id) == ("review", "fair", moderator.id)
        assert await tally_of(world) == {"fair": 1}


async def test_review_next_walks_the_queue(sqlite_world: World) -> None:
    world = sqlite_world
    repo = repo_of(world)
    repo.review_below = 0.999
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
    assert await repo.review_queue_size(world.guild.id) == 1


# -- permissions -----------------------------------------------------------------------------------------------

MODERATOR_COMMANDS = [
    ("prompt", "post", {"prompt": "alliance"}),
    ("prompt", "add", {"name": "tariffs"}),
    ("prompt", "close", {"prompt": "alliance"}),
    ("prompt", "reopen", {"prompt": "alliance"}),
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
    assert await repo_of(world).audit_recent(world.guild.id) == []

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

    monkeypatch.setattr(repo_of(world), "standings", broken)
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
    assert [p.slug for p in await repo_of(world).prompt_overview(world.guild.id)] == ["alliance", "defense"]

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
    assert outcome.result.label == "raise" and outcome.model_version.startswith("similarity:")

    listed = await slash(world, world.moderator, "prompt", "list")
    assert "`tariffs` Tariffs · open · 1 posts · 1 counted · added here" in listed.embeds[0]["description"]

    closed = await slash(world, world.moderator, "prompt", "close", prompt="tariffs")
    assert "Closed **tariffs**" in text_of(closed)
    await world.server.send_message(thread_id, world.member("kenji"), "cut tariffs, they are a tax on us")
    await world.reply(await post_prompt(world), "olek", FAIR)  # a later event: the closed thread's was handled
    assert await repo_of(world).count_replies() == 2
    refused = await slash(world, world.member("kenji"), "stance", "submit", prompt="tariffs", text="cut them")
    assert "not open here" in text_of(refused)

    await slash(world, world.moderator, "prompt", "reopen", prompt="tariffs")
    later = await world.reply(thread_id, "kenji", "cut tariffs, they are a tax on us")
    assert later.result.label == "cut"
    assert await tally_of(world, "tariffs") == {"raise": 1, "cut": 1}


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
    audit = await repo_of(world).audit_recent(world.guild.id, 5)
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
    assert await repo_of(world).count_replies() == 2
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
    repo.review_below = 0.999
    thread_id = await post_prompt(world)
    before = len(world.server.requests)
    outcome = await world.reply(thread_id, "maya", UNSURE)
    await bot_post_in(world, review.id, before)

    async def located() -> bool:
        info = await repo.open_review_for_reply(outcome.reply.id)
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
    [row] = await repo.export_rows("alliance", world.guild.id)
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
            assert await repo_of(world).count_replies() == 2

            post = await world.bot.post_for_thread(thread_id)  # type: ignore[attr-defined]
            await server.click(guild, channel.id, world.member("lucas"), post.message_id, "stancebot:declare:fair")
            assert await tally_of(world) == {"unfair": 1, "fair": 2}
