"""A burst of 10,000 replies through the loopback gateway: each stored once and classified once.

The stand-in encoder (:class:`bot.sandbox.process.StandInEncoder`) replaces the model here: this test is about
delivery, batching and exactly-once storage, and the real model alone would need about two minutes of CPU for
10,000 replies on two cores (its throughput is measured by ``benchmarks/load.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from bot.sandbox.loadgen import build_world, count_replies, post_prompt, send_replies, wait_for_counts
from bot.sandbox.server import LoopbackDiscord
from tests.load.conftest import bot_env, bot_process, scrape, total

BURST = 10_000


@pytest.mark.slow
async def test_a_burst_of_10000_replies_is_stored_and_classified_exactly_once(
    loopback: LoopbackDiscord, db_url: str, tmp_path: Path
) -> None:
    world = build_world(loopback, members=500)
    async with bot_process(loopback, bot_env(db_url, tmp_path), tmp_path / "bot.log") as bot:
        for prompt in ("alliance", "defense") * 5:  # ten prompt threads, a thousand replies each
            await post_prompt(world, prompt)
        started = time.monotonic()
        ids = await send_replies(world, BURST)
        # The same gateway event twice (a replayed dispatch) for 300 of them, during the burst's tail.
        history = {int(m["id"]): m for thread_id in world.threads for m in loopback.messages(thread_id)}
        for message_id in random.Random(7).sample(ids, 300):
            await loopback.dispatch("MESSAGE_CREATE", dict(history[message_id]))
        sent = time.monotonic() - started
        counts = await wait_for_counts(db_url, ids, timeout=120)
        took = time.monotonic() - started
        assert counts.exactly_once(ids), (counts.replies, counts.classified, counts.pending, counts.twice()[:5])
        await asyncio.sleep(0.5)
        metrics = scrape(bot)
    assert total(metrics, "stancebot_replies_classified_total") == BURST
    assert total(metrics, "stancebot_replies_stored_total") == BURST
    assert total(metrics, "stancebot_writes_spooled_total") == 0
    assert (await count_replies(db_url, ids)).exactly_once(ids)
    print(f"\n{BURST} replies sent in {sent:.1f} s, all classified {took:.1f} s after the first")
