"""End-to-end fixtures: the loopback Discord server and the real bot (real discord.py gateway + HTTP code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings, load_settings, make_encoder
from bot.core.encoder import SentenceEncoder
from bot.sandbox.harness import World, new_guild, running_bot, text_of, world_on
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import sqlite_url
from bot.storage.repository import Repository
from tests.conformance.checker import assert_conforms

__all__ = ["World", "new_guild", "running_bot", "text_of", "world_on"]


@pytest.fixture(scope="session")
def encoder() -> SentenceEncoder:
    """The shipped base encoder on ONNX Runtime (int8), as the bot runs it: no torch."""
    return make_encoder(load_settings(None, environ={}))


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build folder with no models of its own: the bot runs the trained models shipped in the package."""
    return tmp_path_factory.mktemp("build")


def e2e_settings(db_url: str, build_dir: Path, **extra: str) -> Settings:
    """Settings for a test bot: the given database and model folder, short batching waits."""
    environ = {
        "STANCEBOT_DATABASE_URL": db_url,
        "STANCEBOT_MODEL_BUILD_DIR": str(build_dir),
        "STANCEBOT_MODEL_MAX_WAIT_MS": "5",
        **extra,
    }
    return load_settings(None, environ=environ)


@pytest.fixture
async def server() -> AsyncIterator[LoopbackDiscord]:
    """A fresh loopback Discord server with Discord's rate limits on, installed as discord.py's API base; afterwards
    every REST answer it gave is checked against Discord's documented shapes (tests/conformance)."""
    async with LoopbackDiscord(rate_limits=True) as srv:
        srv.install()
        yield srv
    assert_conforms(srv.requests)


@pytest.fixture
async def world(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> AsyncIterator[World]:
    """The bot on a fresh database (SQLite file or PostgreSQL), connected to a fresh loopback server."""
    async with world_on(server, e2e_settings(db_url, build_dir), encoder=encoder) as w:
        yield w


ACCEPTANCE_REPLIES = [
    ("maya", "Japan should pay way more, we protect them for free", "unfair"),
    ("kenji", "Japan already pays billions for the bases, it's fair", "fair"),
    ("lucas", "Both countries gain, the bases keep Asia stable", "mutual_benefit"),
]


async def post_prompt(world: World, prompt: str = "alliance") -> int:
    """Moderator posts a prompt; returns the thread id of the post."""
    result, post = await world.post_prompt(prompt)
    assert "Posted" in text_of(result)
    assert post is not None
    assert post.prompt_slug == prompt
    return post.thread_id


# -- helpers shared by the end-to-end tests ---------------------------------------------------------------------

UNFAIR = "Japan should pay way more, we protect them for free"
FAIR = "Unfair? No way, Japan covers most of the cost of hosting U.S. troops."
UNSURE = "I guess maybe, not sure about the bases honestly"


def repo_of(world: World) -> Repository:
    return world.runtime.services.repo


async def tally_of(world: World, prompt: str = "alliance") -> dict[str, int]:
    """The stored tally, without zero rows."""
    definition = world.runtime.services.catalog.get(prompt, world.guild.id)
    tally = await repo_of(world).tallies.tally(definition, world.guild.id)
    return {label: n for label, n in tally.counts.items() if n}


def slash(world: World, who: Any, command: str, sub: str, /, **options: Any) -> Any:
    """Run ``/command sub`` in the world's channel as ``who``."""
    return world.slash(who, command, sub, **options)


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
    settings = e2e_settings(db_url, build_dir, **env)
    async with world_on(server, settings, encoder=encoder, guild=(guild, channel, moderator), members=members) as w:
        yield w


@pytest.fixture
async def sqlite_world(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, tmp_path: Path
) -> AsyncIterator[World]:
    """Like ``world``, on SQLite only: for tests where the database makes no difference."""
    guild, channel, moderator = new_guild(server)
    async with bot_on(server, encoder, build_dir, sqlite_url(tmp_path / "bot.db"), guild, channel, moderator, {}) as w:
        yield w
