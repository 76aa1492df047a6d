"""End-to-end fixtures: the loopback Discord server and the real bot (real discord.py gateway + HTTP code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.config import Settings, load_settings, make_encoder
from bot.core.encoder import SentenceEncoder
from bot.pipeline import ReplyOutcome
from bot.runtime import Runtime, build_runtime
from bot.sandbox.server import LoopbackDiscord


@pytest.fixture(scope="session")
def encoder() -> SentenceEncoder:
    """The shipped base encoder on ONNX Runtime (int8), as the bot runs it: no torch."""
    return make_encoder(load_settings(None, environ={}))


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build folder with no models of its own: the bot runs the trained models shipped in the package."""
    return tmp_path_factory.mktemp("build")


@dataclass
class World:
    """A running loopback Discord with one guild and the real bot connected to it."""

    server: LoopbackDiscord
    runtime: Runtime
    guild: Any
    channel: Any
    moderator: Any
    members: dict[str, Any]

    @property
    def bot(self) -> discord.Client:
        return self.runtime.bot

    def member(self, name: str) -> Any:
        if name not in self.members:
            self.members[name] = self.server.create_member(self.guild, name)
        return self.members[name]

    async def reply(self, thread_id: int, author: str, text: str, **kwargs: Any) -> ReplyOutcome:
        """Send a message as a member and wait until the bot stored its stance."""
        member = self.member(author)
        waiter = asyncio.ensure_future(
            self.runtime.bot.wait_for(
                "stance_recorded",
                check=lambda o: o.reply.author_id == member.id and o.reply.content == text,
                timeout=20,
            )
        )
        await self.server.send_message(thread_id, member, text, **kwargs)
        return await waiter


def e2e_settings(db_url: str, build_dir: Path, **extra: str) -> Settings:
    """Settings for a test bot: the given database and model folder, short batching waits."""
    environ = {
        "STANCEBOT_DATABASE_URL": db_url,
        "STANCEBOT_MODEL_BUILD_DIR": str(build_dir),
        "STANCEBOT_MODEL_MAX_WAIT_MS": "5",
        **extra,
    }
    return load_settings(None, environ=environ)


@asynccontextmanager
async def running_bot(
    settings: Settings,
    encoder: SentenceEncoder,
    server: LoopbackDiscord,
    *,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Runtime]:
    """Start the real bot against ``server`` (with a fake ``clock`` if given) and wait until it is ready."""
    runtime = await build_runtime(settings, encoder=encoder)
    runtime.services.clock = clock
    task = asyncio.create_task(runtime.bot.start(server.token))
    try:
        await asyncio.wait_for(runtime.bot.wait_until_ready(), 30)
        yield runtime
    finally:
        await runtime.aclose()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def server() -> AsyncIterator[LoopbackDiscord]:
    """A fresh loopback Discord server, installed as discord.py's API base."""
    async with LoopbackDiscord() as srv:
        srv.install()
        yield srv


@pytest.fixture
async def world(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> AsyncIterator[World]:
    """The bot on a fresh database (SQLite file or PostgreSQL), connected to a fresh loopback server."""
    guild = server.create_guild("Test guild")
    channel = server.create_channel(guild, "debate")
    moderator = server.create_member(guild, "mod", permissions=discord.Permissions(manage_messages=True))
    async with running_bot(e2e_settings(db_url, build_dir), encoder, server) as runtime:
        yield World(server, runtime, guild, channel, moderator, {})
