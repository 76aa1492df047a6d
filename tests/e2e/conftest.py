"""End-to-end fixtures: the loopback Discord server and the real bot (real discord.py gateway + HTTP code)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.core.encoder import SentenceEncoder
from bot.core.prompts import PromptCatalog
from bot.sandbox.harness import World, new_guild, running_bot, text_of, world_on
from bot.sandbox.server import LoopbackDiscord

__all__ = ["World", "new_guild", "running_bot", "text_of", "world_on"]


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory: pytest.TempPathFactory, encoder: SentenceEncoder, catalog: PromptCatalog) -> Path:
    """Stance models trained by the project's own recipe (fast head variant) on the committed train splits."""
    from bot.core.training import train_prompt

    out = tmp_path_factory.mktemp("build")
    for prompt in catalog:
        train_prompt(prompt, out / prompt.id, encoder=encoder, variant="head")
    return out


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
    """A fresh loopback Discord server, installed as discord.py's API base."""
    async with LoopbackDiscord() as srv:
        srv.install()
        yield srv


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
