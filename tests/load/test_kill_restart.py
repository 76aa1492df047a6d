"""The bot killed (SIGKILL) in the middle of a burst and restarted: the replies it had stored but not classified
are finished, the ones posted while it was down are read from channel history, and none counts twice.

The stand-in encoder with a simulated cost of 10 ms per reply (slower than storing, even on a busy machine)
replaces the model, so that a backlog builds up before the kill (the real model would do the same, only slower).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.sandbox.loadgen import build_world, count_replies, post_prompt, send_replies, wait_for_counts
from bot.sandbox.process import BotProcess
from bot.sandbox.server import LoopbackDiscord
from tests.load.conftest import bot_env, scrape, total


@pytest.mark.slow
async def test_killed_mid_burst_and_restarted_finishes_everything_once(
    loopback: LoopbackDiscord, db_url: str, tmp_path: Path
) -> None:
    world = build_world(loopback, members=300)
    env = bot_env(db_url, tmp_path)
    options = {"standin": True, "standin_ms": 10.0, "extensions": ["bot.cogs.catchup"]}
    first = BotProcess.for_server(loopback, env, log_path=tmp_path / "first.log", **options)  # type: ignore[arg-type]
    await first.start()
    await post_prompt(world, "alliance")
    await post_prompt(world, "defense")

    await send_replies(world, 1200, rate=400)
    burst = asyncio.create_task(send_replies(world, 800, rate=400, start=1200))
    first.kill()  # mid-burst, with replies queued, in flight and unsent to the database
    await first.wait_killed()
    before_kill = list(world.sent)
    at_kill = await count_replies(db_url, before_kill)
    assert at_kill.pending > 0  # stored, not classified: the restart must finish these
    assert at_kill.classified < len(before_kill)
    await burst  # the rest of the burst goes out while the bot is down
    down = await send_replies(world, 300, start=5000)  # and more, in a quiet moment
    assert len(world.sent) == 2300

    second = BotProcess.for_server(loopback, env, log_path=tmp_path / "second.log", **options)  # type: ignore[arg-type]
    await second.start()
    try:
        ids = world.message_ids()
        counts = await wait_for_counts(db_url, ids, timeout=90)
        assert counts.exactly_once(ids), (counts.replies, counts.classified, counts.pending, counts.twice()[:5])
        await asyncio.sleep(0.5)
        metrics = scrape(second)
    finally:
        await second.stop()
    missed = await count_replies(db_url, down)
    assert missed.replies == 300
    # Everything the first process never stored came from history, and was counted as caught up.
    assert total(metrics, "stancebot_replies_caught_up_total") >= len(ids) - at_kill.replies
