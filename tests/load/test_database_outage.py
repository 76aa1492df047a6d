"""PostgreSQL stopped for several seconds during a burst and started again: every reply stored and classified,
none twice. The cluster is the test's own (see ``Cluster``); the stand-in encoder replaces the model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.sandbox.loadgen import build_world, post_prompt, send_replies, wait_for_counts
from bot.sandbox.server import LoopbackDiscord
from tests.load.conftest import Cluster, bot_env, bot_process, scrape, total


@pytest.mark.slow
async def test_postgresql_stopped_during_a_burst_loses_and_doubles_nothing(
    loopback: LoopbackDiscord, pg_cluster: Cluster, tmp_path: Path
) -> None:
    world = build_world(loopback, members=300)
    async with bot_process(loopback, bot_env(pg_cluster.url, tmp_path), tmp_path / "bot.log") as bot:
        await post_prompt(world, "alliance")
        await post_prompt(world, "defense")
        burst = asyncio.create_task(send_replies(world, 3000, rate=250))  # 12 s of replies
        await asyncio.sleep(3)
        await pg_cluster.stop()  # the database goes away mid-burst...
        await asyncio.sleep(5)
        during = scrape(bot)
        await pg_cluster.start()  # ...and comes back
        ids = await burst
        counts = await wait_for_counts(pg_cluster.url, ids, timeout=60)
        assert counts.exactly_once(ids), (counts.replies, counts.classified, counts.pending, counts.twice()[:5])
        await asyncio.sleep(0.5)
        after = scrape(bot)
    assert total(during, "stancebot_database_up") == 0
    assert total(during, "stancebot_spool_writes") > 0
    assert total(after, "stancebot_writes_spooled_total") > 100  # replies kept on disk meanwhile
    assert total(after, "stancebot_database_errors_total") > 0
    assert total(after, "stancebot_writes_dropped_total") == 0
    assert total(after, "stancebot_database_up") == 1
    assert total(after, "stancebot_spool_writes") == 0
    assert total(after, "stancebot_replies_classified_total") == len(ids)
