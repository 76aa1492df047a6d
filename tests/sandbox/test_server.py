"""The loopback Discord server against the real, unpatched discord.py client (HTTP + WebSocket, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from bot.sandbox import Guild, LoopbackDiscord, Member
from tests.conformance.checker import assert_conforms

pytestmark = pytest.mark.asyncio

VOTE_ID = "sandbox:vote"
BotT = TypeVar("BotT", bound=commands.Bot | commands.AutoShardedBot)


class VoteView(discord.ui.View):
    """A persistent view with one button of stable custom id."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Vote", custom_id=VOTE_ID)
    async def vote(self, interaction: discord.Interaction, button: discord.ui.Button[VoteView]) -> None:
        await interaction.response.send_message(f"{interaction.user.name} voted", ephemeral=True)


class Feedback(discord.ui.Modal, title="Feedback"):
    """A modal with one text input."""

    opinion: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="Opinion", custom_id="opinion")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks for: {self.opinion.value}")


class SandboxBot(commands.Bot):
    """A small real bot: slash commands, a group, an on_message echo, a button and a modal."""

    def __init__(self, *, message_content: bool = True, **kwargs: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.05, **kwargs)
        self.seen: list[discord.Message] = []
        self.resumed = asyncio.Event()
        self.tree.add_command(self._commands())
        for command in self._slash_commands():
            self.tree.add_command(command)

    async def setup_hook(self) -> None:
        self.add_view(VoteView())

    async def on_resumed(self) -> None:
        self.resumed.set()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        if message.author == self.user:
            return
        none = discord.AllowedMentions.none()
        if message.content == "!buttons":
            await message.channel.send("Cast your vote", view=VoteView(), allowed_mentions=none)
        elif message.content == "!thread":
            topic = await message.channel.send("Discuss here", allowed_mentions=none)
            await topic.create_thread(name="Discussion")
        elif message.content == "!file":
            await message.channel.send("report", file=discord.File(io.BytesIO(b"a,b\n1,2\n"), "report.csv"))
        elif message.content == "!react":
            await message.add_reaction("👍")
        else:
            await message.channel.send(f"echo: {message.content}", allowed_mentions=none)

    def _commands(self) -> app_commands.Group:
        echo = app_commands.Group(name="echo", description="Echo things")

        @echo.command(name="say", description="Say some text")
        async def say(interaction: discord.Interaction, text: str, times: int = 1) -> None:
            await interaction.response.send_message(" ".join([text] * times))

        return echo

    def _slash_commands(self) -> list[app_commands.Command[Any, ..., Any]]:
        @app_commands.command(name="ping", description="Ping the bot")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong", ephemeral=True)

        @app_commands.command(name="slow", description="Defer, then answer")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await asyncio.sleep(0.05)
            await interaction.edit_original_response(content="done thinking")
            await interaction.followup.send("and a followup")

        @app_commands.command(name="feedback", description="Open a modal")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Feedback())

        @app_commands.command(name="admin", description="Administrators only")
        @app_commands.default_permissions(manage_guild=True)
        async def admin(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("hello admin", ephemeral=True)

        @app_commands.command(name="who", description="Name a member")
        async def who(interaction: discord.Interaction, member: discord.Member) -> None:
            await interaction.response.send_message(f"that is {member.name}", ephemeral=True)

        @app_commands.command(name="lag", description="Answers too late")
        async def lag(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.4)
            await interaction.response.send_message("too late")

        @app_commands.command(name="pick", description="Pick a fruit")
        async def pick(interaction: discord.Interaction, fruit: str) -> None:
            await interaction.response.send_message(f"you picked {fruit}")

        @pick.autocomplete("fruit")
        async def fruits(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            names = ["apple", "apricot", "banana"]
            return [app_commands.Choice(name=name, value=name) for name in names if name.startswith(current)]

        return [ping, slow, feedback, admin, who, lag, pick]


class Scene:
    """A running server with a guild, a channel and a member, plus helpers to run bots against it."""

    def __init__(self, server: LoopbackDiscord) -> None:
        self.server = server
        self.guild: Guild = server.create_guild("Sandbox")
        self.channel = server.create_channel(self.guild, "general")
        self.alice: Member = server.create_member(self.guild, "alice")
        self.tasks: list[tuple[commands.Bot | commands.AutoShardedBot, asyncio.Task[None]]] = []

    async def start(self, bot: BotT, *, sync: bool = True) -> BotT:
        """Log the bot in through real HTTP + WebSocket and wait for on_ready (and sync its commands)."""
        task = asyncio.create_task(bot.start(self.server.token))
        self.tasks.append((bot, task))
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait({ready, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()
        assert ready.done(), "the bot did not become ready"
        if sync:
            await bot.tree.sync()
        return bot

    async def close(self) -> None:
        for bot, task in self.tasks:
            await bot.close()
            await asyncio.gather(task, return_exceptions=True)


@pytest_asyncio.fixture
async def scene() -> AsyncIterator[Scene]:
    async with LoopbackDiscord() as server:
        server.install()
        scene = Scene(server)
        try:
            yield scene
        finally:
            await scene.close()
    assert_conforms(server.requests)  # every answer in Discord's documented shape


@pytest_asyncio.fixture
async def bot(scene: Scene) -> SandboxBot:
    return await scene.start(SandboxBot())


async def eventually(check: Callable[[], bool], within: float = 5) -> None:
    """Wait until ``check()`` holds (polling: the conditions span the bot and the server)."""
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def exchange(scene: Scene, text: str) -> None:
    """Alice says ``text``; wait until the bot has acted on it (made a request that is not a read)."""
    seen = len(scene.server.requests)
    await scene.server.send_message(scene.channel.id, scene.alice, text)
    await eventually(lambda: any(r.method != "GET" for r in scene.server.requests[seen:]))


def request_to(method: str, route: str) -> Callable[[Any], bool]:
    return lambda r: r.method == method and r.route == route


async def test_login_ready_and_command_sync(scene: Scene, bot: SandboxBot) -> None:
    server = scene.server
    assert bot.user is not None and bot.user.id == server.bot_user.id
    assert bot.application_id == server.application_id
    guild = bot.get_guild(scene.guild.id)
    assert guild is not None and guild.get_channel(scene.channel.id) is not None
    assert guild.me.guild_permissions.send_messages
    [session] = server.sessions
    assert session.intents == bot.intents.value and session.intents & (1 << 15)
    assert [r.path for r in server.requests[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    names = {command["name"] for command in server.commands}
    assert names == {"echo", "ping", "slow", "feedback", "admin", "who", "lag", "pick"}
    echo = next(command for command in server.commands if command["name"] == "echo")
    assert [option["name"] for option in echo["options"]] == ["say"]
    # a second sync keeps the ids, as Discord does
    before = {command["name"]: command["id"] for command in server.commands}
    await bot.tree.sync()
    assert {command["name"]: command["id"] for command in server.commands} == before


async def test_slash_command_answers_ephemerally(scene: Scene, bot: SandboxBot) -> None:
    result = await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "ping")
    assert (result.type, result.content, result.ephemeral, result.deferred) == (4, "pong", True, False)
    assert scene.server.messages(scene.channel.id) == []  # ephemeral answers are in no channel history
    member = result.interaction["member"]
    assert member["user"]["id"] == str(scene.alice.id) and int(member["permissions"]) & (1 << 11)
    assert int(result.interaction["app_permissions"]) & (1 << 11)


async def test_group_subcommand_with_options(scene: Scene, bot: SandboxBot) -> None:
    result = await scene.server.slash(
        scene.guild,
        scene.channel.id,
        scene.alice,
        "echo",
        subcommand="say",
        options={"text": "hi", "times": 2},
    )
    assert result.content == "hi hi" and not result.ephemeral
    [message] = scene.server.bot_messages(scene.channel.id)
    assert message["content"] == "hi hi"
    assert message["interaction_metadata"]["user"]["id"] == str(scene.alice.id)
    await eventually(lambda: any(m.content == "hi hi" for m in bot.seen))  # MESSAGE_CREATE for the answer too


async def test_user_option_is_resolved(scene: Scene, bot: SandboxBot) -> None:
    bob = scene.server.create_member(scene.guild, "bob")
    options = {"member": bob}
    result = await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "who", options=options)
    assert result.content == "that is bob"


async def test_autocomplete_choices(scene: Scene, bot: SandboxBot) -> None:
    result = await scene.server.autocomplete(
        scene.guild, scene.channel.id, scene.alice, "pick", focused="fruit", options={"fruit": "ap"}
    )
    assert result.type == 8
    assert [choice["name"] for choice in result.choices] == ["apple", "apricot"]


async def test_commands_must_be_synced_and_visible(scene: Scene) -> None:
    await scene.start(SandboxBot(), sync=False)
    with pytest.raises(LookupError, match="not synced"):
        await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "ping")
    bot = scene.tasks[0][0]
    await bot.tree.sync()
    with pytest.raises(PermissionError):
        await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "admin")
    boss = scene.server.create_member(scene.guild, "boss", permissions=discord.Permissions(manage_guild=True))
    result = await scene.server.slash(scene.guild, scene.channel.id, boss, "admin")
    assert result.content == "hello admin"


async def test_on_message_sees_content_and_replies(scene: Scene, bot: SandboxBot) -> None:
    sent = await scene.server.send_message(scene.channel.id, scene.alice, "hello there")
    reply = await scene.server.wait_for(request_to("POST", "/channels/{channel_id}/messages"))
    assert reply.json["content"] == "echo: hello there"
    assert reply.json["allowed_mentions"] == {"parse": []}
    assert [m["content"] for m in scene.server.messages(scene.channel.id)] == [
        "hello there",
        "echo: hello there",
    ]
    assert bot.seen[0].id == int(sent["id"]) and bot.seen[0].author.id == scene.alice.id


async def test_without_message_content_intent_content_is_empty(scene: Scene) -> None:
    bot = await scene.start(SandboxBot(message_content=False), sync=False)
    await scene.server.send_message(scene.channel.id, scene.alice, "secret words")
    await scene.server.send_message(scene.channel.id, scene.alice, "hey bot", mentions_bot=True)
    await eventually(lambda: len([m for m in bot.seen if m.author.id == scene.alice.id]) == 2)
    plain, mention = (m for m in bot.seen if m.author.id == scene.alice.id)
    assert plain.content == ""
    assert mention.content == f"<@{scene.server.bot_user.id}> hey bot"
    assert bot.user in mention.mentions
    await scene.server.send_message(scene.server.dm_channel(scene.alice).id, scene.alice, "private words")
    await eventually(lambda: any(m.content == "private words" for m in bot.seen))  # DMs keep their content


async def test_direct_messages_both_ways(scene: Scene, bot: SandboxBot) -> None:
    user = await bot.fetch_user(scene.alice.id)
    await user.send("hello in private")
    dm = scene.server.dm_channel(scene.alice)
    assert [m["content"] for m in scene.server.messages(dm.id)] == ["hello in private"]
    await scene.server.send_message(dm.id, scene.alice, "psst")
    await eventually(lambda: len(scene.server.bot_messages(dm.id)) == 2)
    assert scene.server.bot_messages(dm.id)[-1]["content"] == "echo: psst"
    assert any(isinstance(m.channel, discord.DMChannel) and m.content == "psst" for m in bot.seen)


async def test_members_intent_chunks_and_live_world_changes(scene: Scene) -> None:
    intents = discord.Intents.default()
    intents.members = True
    plain = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
    bot = await scene.start(plain, sync=False)
    guild = bot.get_guild(scene.guild.id)
    assert guild is not None and guild.chunked
    assert {m.name for m in guild.members} == {"sandbox-owner", "Stancebot", "alice"}
    assert [m.id for m in await guild.query_members("al")] == [scene.alice.id]  # op 8 -> GUILD_MEMBERS_CHUNK
    boss = scene.server.create_member(scene.guild, "boss", permissions=discord.Permissions(manage_guild=True))
    news = scene.server.create_channel(scene.guild, "news")
    other = scene.server.create_guild("Elsewhere")
    await eventually(lambda: bot.get_guild(other.id) is not None and bot.get_channel(news.id) is not None)
    member = guild.get_member(boss.id)
    assert member is not None and member.guild_permissions.manage_guild


async def test_disallowed_message_content_intent_closes_with_4014() -> None:
    async with LoopbackDiscord(message_content_intent_allowed=False) as server:
        server.install()
        server.create_guild("Sandbox")
        bot = SandboxBot()
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(bot.start(server.token), 10)
        await bot.close()


async def test_thread_from_a_bot_message(scene: Scene, bot: SandboxBot) -> None:
    await scene.server.send_message(scene.channel.id, scene.alice, "!thread")
    route = "/channels/{channel_id}/messages/{message_id}/threads"
    created = await scene.server.wait_for(request_to("POST", route))
    [(thread_id, thread)] = scene.server.threads.items()
    topic = scene.server.bot_messages(scene.channel.id)[-1]
    assert thread_id == int(topic["id"]) and thread.name == "Discussion" and created.status == 201
    await eventually(lambda: bot.get_channel(thread_id) is not None)
    assert isinstance(bot.get_channel(thread_id), discord.Thread)
    await scene.server.send_message(thread_id, scene.alice, "in the thread")
    await eventually(lambda: len(scene.server.bot_messages(thread_id)) == 1)
    assert scene.server.bot_messages(thread_id)[0]["content"] == "echo: in the thread"


async def test_button_click_is_dispatched_and_answered(scene: Scene, bot: SandboxBot) -> None:
    await scene.server.send_message(scene.channel.id, scene.alice, "!buttons")
    await eventually(lambda: len(scene.server.bot_messages(scene.channel.id)) == 1)
    message = scene.server.bot_messages(scene.channel.id)[0]
    result = await scene.server.click(scene.guild, scene.channel.id, scene.alice, int(message["id"]), VOTE_ID)
    assert (result.content, result.ephemeral) == ("alice voted", True)
    with pytest.raises(LookupError):
        await scene.server.click(scene.guild, scene.channel.id, scene.alice, int(message["id"]), "nope")


async def test_modal_submit(scene: Scene, bot: SandboxBot) -> None:
    opened = await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "feedback")
    assert opened.type == 9 and opened.modal is not None and opened.modal["title"] == "Feedback"
    result = await scene.server.submit_modal(
        scene.guild, scene.channel.id, scene.alice, opened.data["custom_id"], {"opinion": "great bot"}
    )
    assert result.content == "thanks for: great bot"


async def test_deferred_answer_edit_and_followup(scene: Scene, bot: SandboxBot) -> None:
    result = await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "slow")
    assert result.deferred and result.type == 5
    assert result.content == "done thinking"
    assert [f["content"] for f in result.followups] == ["and a followup"]
    assert [m["content"] for m in scene.server.bot_messages(scene.channel.id)] == [
        "done thinking",
        "and a followup",
    ]


async def test_second_callback_is_already_acknowledged(scene: Scene, bot: SandboxBot) -> None:
    result = await scene.server.slash(scene.guild, scene.channel.id, scene.alice, "ping")
    interaction = result.interaction
    url = f"{scene.server.base_url}/interactions/{interaction['id']}/{interaction['token']}/callback"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json={"type": 4, "data": {"content": "again"}}) as answer,
    ):
        assert answer.status == 400
        assert (await answer.json())["code"] == 40060
    assert scene.server.requests[-1].status == 400  # recorded like the bot's own requests


async def test_late_callback_is_an_unknown_interaction() -> None:
    async with LoopbackDiscord(ack_deadline=0.2) as server:
        server.install()
        scene = Scene(server)
        try:
            await scene.start(SandboxBot())
            with pytest.raises(TimeoutError):
                await server.slash(scene.guild, scene.channel.id, scene.alice, "lag", timeout=1)
            route = "/interactions/{interaction_id}/{token}/callback"
            late = await server.wait_for(request_to("POST", route))
            assert (late.status, late.response["code"]) == (404, 10062)
        finally:
            await scene.close()


async def test_forced_disconnect_resumes_and_replays(scene: Scene, bot: SandboxBot) -> None:
    [session] = scene.server.sessions
    await scene.server.disconnect_all()
    missed = await scene.server.send_message(scene.channel.id, scene.alice, "while you were away")
    await asyncio.wait_for(bot.resumed.wait(), 10)
    assert scene.server.sessions == [session] and session.resumes == 1
    await eventually(lambda: any(m.id == int(missed["id"]) for m in bot.seen))


async def test_user_edits_and_deletes_reach_the_bot(scene: Scene, bot: SandboxBot) -> None:
    edits: list[tuple[str, str]] = []
    deleted: list[int] = []

    async def on_message_edit(before: discord.Message, after: discord.Message) -> None:
        edits.append((before.content, after.content))

    async def on_message_delete(message: discord.Message) -> None:
        deleted.append(message.id)

    bot.add_listener(on_message_edit)
    bot.add_listener(on_message_delete)
    sent = await scene.server.send_message(scene.channel.id, scene.alice, "first draft")
    await eventually(lambda: len(bot.seen) == 2)  # alice's message and the echo
    await scene.server.edit_message(scene.channel.id, int(sent["id"]), "final words")
    await scene.server.delete_message(scene.channel.id, int(sent["id"]))
    await eventually(lambda: bool(edits and deleted))
    assert edits == [("first draft", "final words")] and deleted == [int(sent["id"])]


async def test_history_fetch_upload_and_reaction(scene: Scene, bot: SandboxBot) -> None:
    for text in ("one", "two", "!file", "!react"):
        await exchange(scene, text)
    channel = bot.get_channel(scene.channel.id)
    assert isinstance(channel, discord.TextChannel)
    history = [m.content async for m in channel.history(limit=10, oldest_first=True)]
    assert history[:4] == ["one", "echo: one", "two", "echo: two"]
    upload = next(r for r in scene.server.requests if r.files)
    assert upload.files == [("report.csv", b"a,b\n1,2\n")] and upload.json["content"] == "report"
    report = next(m for m in scene.server.bot_messages(scene.channel.id) if m["attachments"])
    fetched = await channel.fetch_message(int(report["id"]))
    assert await fetched.attachments[0].read() == b"a,b\n1,2\n"
    react = next(m for m in scene.server.messages(scene.channel.id) if m["content"] == "!react")
    assert react["reactions"][0]["emoji"]["name"] == "👍" and react["reactions"][0]["me"]


async def test_every_request_is_recorded_and_unknown_routes_answer_404(scene: Scene, bot: SandboxBot) -> None:
    route = discord.http.Route("GET", "/channels/{channel_id}/pins", channel_id=scene.channel.id)
    with pytest.raises(discord.NotFound):
        await bot.http.request(route)
    missing = scene.server.requests[-1]
    assert (missing.method, missing.status, missing.route) == ("GET", 404, None)
    assert missing.path == f"/channels/{scene.channel.id}/pins"
    assert all(r.time > 0 and r.path.startswith("/") for r in scene.server.requests)
    async with aiohttp.ClientSession() as http, http.get(scene.server.base_url + "/gateway") as response:
        assert response.headers["Content-Type"] == "application/json"
        assert (await response.json())["url"] == scene.server.gateway_url


class QuickShardedBot(commands.AutoShardedBot):
    """An auto-sharded bot that skips discord.py's 5 s pause between IDENTIFYs (a documented hook)."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


async def test_auto_sharded_bot_gets_guilds_by_shard(scene: Scene) -> None:
    scene.server.recommended_shards = 2
    other = scene.server.create_guild("Other")
    while (other.id >> 22) % 2 == (scene.guild.id >> 22) % 2:
        await asyncio.sleep(0.002)
        other = scene.server.create_guild("Other")
    intents = discord.Intents.default()
    sharded = QuickShardedBot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
    bot = await scene.start(sharded, sync=False)
    assert bot.shard_count == 2
    assert sorted(s.shard for s in scene.server.sessions if s.shard) == [(0, 2), (1, 2)]
    for guild in (scene.guild, other):
        cached = bot.get_guild(guild.id)
        assert cached is not None and cached.shard_id == (guild.id >> 22) % 2
