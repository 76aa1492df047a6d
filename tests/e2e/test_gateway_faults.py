"""End to end: gateway faults during a burst of replies (op 7 Reconnect, op 9 Invalid Session resumable or not, a
socket dropped without a close frame, a zombied connection whose heartbeats go unacknowledged). discord.py
reconnects or resumes, and every reply is stored and classified exactly once: events replayed on RESUME dedupe,
events lost with an invalidated session are caught up from the thread's history."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.core.encoder import SentenceEncoder
from bot.sandbox.loadgen import wait_for_counts
from bot.sandbox.server import LoopbackDiscord
from tests.e2e.conftest import bot_on, new_guild, post_prompt

TEXTS = [
    "Japan should pay way more, we protect them for free",
    "Japan already pays billions for the bases, it's fair",
    "Both countries gain, the bases keep Asia stable",
]


async def _reconnect(server: LoopbackDiscord) -> None:
    server.gateway.resume_overlap = 5  # the RESUME also replays five events the bot already had
    assert await server.gateway_faults.reconnect() == 1


async def _resumable(server: LoopbackDiscord) -> None:
    assert await server.gateway_faults.invalid_session(resumable=True) == 1


async def _not_resumable(server: LoopbackDiscord) -> None:
    assert await server.gateway_faults.invalid_session(resumable=False) == 1


async def _drop(server: LoopbackDiscord) -> None:
    assert server.gateway_faults.drop() == 1


async def _zombie(server: LoopbackDiscord) -> None:
    assert server.gateway_faults.zombie() == 1


FAULTS: dict[str, tuple[Callable[[LoopbackDiscord], Awaitable[None]], bool]] = {
    "op7-reconnect": (_reconnect, True),
    "op9-resumable": (_resumable, True),
    "op9-not-resumable": (_not_resumable, False),
    "dropped-socket": (_drop, True),
    "zombied-heartbeats": (_zombie, True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_a_gateway_fault_during_a_burst_loses_and_doubles_nothing(
    fault: str, server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> None:
    inject, resumes = FAULTS[fault]
    server.gateway.heartbeat_interval_ms = 500  # so the 10 s heartbeat timeout only fires on a zombie
    guild, channel, moderator = new_guild(server)
    members: dict[str, Any] = {}
    env = {"STANCEBOT_BOT_HEARTBEAT_TIMEOUT": "10"}
    async with bot_on(server, encoder, build_dir, db_url, guild, channel, moderator, members, **env) as world:
        thread_id = await post_prompt(world)
        [session] = server.sessions
        identified = session.session_id
        ids: list[int] = []
        before = len(server.requests)
        for i in range(30):  # 30 replies at about 50 per second, the fault after the tenth
            if i == 10:
                await inject(server)
            message_id = server.world.snowflakes.next()
            ids.append(message_id)
            await server.send_message(thread_id, world.member(f"m{i % 12}"), TEXTS[i % 3], message_id=message_id)
            await asyncio.sleep(0.02)
        counts = await wait_for_counts(db_url, ids, timeout=60)
        assert counts.exactly_once(ids), (counts, counts.twice())
        [now] = server.sessions
        if resumes:
            assert now.session_id == identified and now.resumes >= 1
        else:
            assert now.session_id != identified, "an invalidated session must IDENTIFY anew"
            history = f"/channels/{thread_id}/messages"
            assert any(r.method == "GET" and r.path == history for r in server.requests[before:]), "no catch-up"
