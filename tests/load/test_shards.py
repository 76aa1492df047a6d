"""Sharding: two bot processes, each with its own shard, on one PostgreSQL database.

Each process receives only its shard's guilds and fires only their schedules (``Scheduler(shards=...)``); a
scheduled digest is also claimed in the database before it is posted (``digest_posts``' unique key), so
even two processes serving the same guild would post it once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.assets import prompts_dir
from bot.core.periods import Cadence
from bot.core.prompts import PromptCatalog
from bot.core.shards import shard_of
from bot.sandbox.loadgen import build_world, post_prompt, send_replies, wait_for_counts
from bot.sandbox.process import BotProcess
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.storage.models import DigestPost, DigestSchedule, utcnow
from bot.storage.repository import Repository
from tests.load.conftest import bot_env

pytestmark = pytest.mark.postgres


async def _prepare(db_url: str, guild_id: int, channel_id: int) -> None:
    """What `stancebot db upgrade` and a moderator's /digest schedule leave: the schema, prompts, a schedule that
    is already due."""
    engine = make_engine(db_url)
    try:
        await upgrade(engine)
        repo = Repository(make_sessionmaker(engine))
        for prompt in PromptCatalog.from_dir(prompts_dir()):
            await repo.prompts.sync_prompt(prompt)
        store = repo
        now = utcnow()
        await store.schedules.upsert_schedule(
            guild_id, "alliance", channel_id, Cadence("daily"), created_by=None, now=now
        )
        async with make_sessionmaker(engine)() as s, s.begin():
            await s.execute(update(DigestSchedule).values(next_due_at=now - timedelta(minutes=1)))
    finally:
        await engine.dispose()


async def _digest_claims(db_url: str) -> list[str]:
    """Who claimed each digest (``host:pid:suffix``)."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            return [str(who) for who in await conn.scalars(select(DigestPost.claimed_by))]
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_two_shard_processes_post_one_scheduled_digest(
    loopback: LoopbackDiscord, pg_url: str, tmp_path: Path
) -> None:
    world = build_world(loopback, members=20)
    digests = loopback.create_channel(world.guild, "digests")
    await _prepare(pg_url, world.guild.id, digests.id)
    procs = [
        BotProcess.for_server(
            loopback,
            bot_env(pg_url, tmp_path, STANCEBOT_BOT_SHARD_COUNT="2", STANCEBOT_BOT_SHARD_IDS=f"[{shard}]"),
            standin=True,
            extensions=["bot.cogs.digest", "bot.cogs.catchup"],
            log_path=tmp_path / f"shard{shard}.log",
        )
        for shard in (0, 1)
    ]
    await asyncio.gather(*(p.start() for p in procs))  # both start at once: both schedulers find the digest due
    try:
        assert sorted(s.shard for s in loopback.sessions) == [(0, 2), (1, 2)]
        for _ in range(100):
            if loopback.bot_messages(digests.id):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # time for a second post, if there were to be one
        posted = loopback.bot_messages(digests.id)
        assert len(posted) == 1, [m["embeds"][0].get("footer") for m in posted]
        assert posted[0]["embeds"][0]["footer"]["text"].startswith("Stancebot digest #")
        claims = await _digest_claims(pg_url)
        owner = procs[shard_of(world.guild.id, 2)]
        assert len(claims) == 1 and claims[0].split(":")[1] == str(owner.pid), (claims, owner.pid)  # its own shard

        # Replies reach the shard that serves the guild, and are counted once.
        await post_prompt(world, "alliance")
        ids = await send_replies(world, 200)
        counts = await wait_for_counts(pg_url, ids, timeout=60)
        assert counts.exactly_once(ids)
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
