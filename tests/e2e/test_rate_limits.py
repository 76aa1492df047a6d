"""End to end under Discord's rate limits: a burst of replies with reactions and review posts, and a digest at the
same time; discord.py waits for its buckets, nothing is lost and the event loop keeps running."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.core.encoder import SentenceEncoder
from bot.metrics import LoopLagProbe
from bot.sandbox.loadgen import wait_for_counts
from bot.sandbox.server import LoopbackDiscord
from tests.e2e.conftest import bot_on, new_guild, post_prompt, slash, text_of, until

REPLIES = [
    "Japan should pay way more, we protect them for free",
    "Japan already pays billions for the bases, it's fair",
    "Both countries gain, the bases keep Asia stable",
    "I guess maybe, not sure about the bases honestly",
    "The U.S. gets a forward base for next to nothing",
]


async def test_a_burst_with_reactions_reviews_and_a_digest_stays_within_the_limits(
    server: LoopbackDiscord, encoder: SentenceEncoder, build_dir: Path, db_url: str
) -> None:
    assert server.rest.ratelimits.enabled  # the e2e server fixture has Discord's rate limits on
    guild, channel, moderator = new_guild(server)
    review = server.create_channel(guild, "review")
    members: dict[str, Any] = {}
    env = {"STANCEBOT_BOT_REACT_TO_REPLIES": "true", "STANCEBOT_MODERATION_REVIEW_BELOW": "1.0"}
    async with bot_on(server, encoder, build_dir, db_url, guild, channel, moderator, members, **env) as world:
        await slash(world, moderator, "review", "channel", channel=review)
        thread_id = await post_prompt(world)
        probe = LoopLagProbe(interval=0.02)
        probe.start()
        ids: list[int] = []

        async def burst() -> None:  # 15 replies at 50 per second
            for i in range(15):
                message_id = server.world.snowflakes.next()
                ids.append(message_id)
                await server.send_message(thread_id, world.member(f"m{i}"), REPLIES[i % 5], message_id=message_id)
                await asyncio.sleep(0.02)

        _, digest = await asyncio.gather(burst(), slash(world, moderator, "digest", "now", prompt="alliance"))
        assert digest.followups and digest.followups[0]["embeds"], text_of(digest)
        counts = await wait_for_counts(db_url, ids, timeout=60)
        assert counts.exactly_once(ids), counts

        def reacted() -> int:
            thread = server.world.channels[thread_id]
            return sum(
                1 for m in thread.messages if int(m["id"]) in ids and any(r["me"] for r in m.get("reactions", []))
            )

        def reviews() -> int:
            return sum(1 for m in review.messages if int(m["author"]["id"]) == server.bot_user.id)

        async def all_out() -> bool:
            return reacted() == len(ids) and reviews() == len(ids)

        for _ in range(6):  # the review channel's bucket lets 5 posts out every 5 seconds
            try:
                await until(all_out)
                break
            except TimeoutError:
                continue
        await probe.stop()
        assert (reacted(), reviews()) == (len(ids), len(ids))
        limits = server.rest.ratelimits
        refused = [r for r in server.requests if r.status >= 400 and r.status != 429]
        assert refused == [], [(r.method, r.path, r.status, r.response) for r in refused]
        # Nothing model-sized ran on the event loop (a batch classified there stalls it for hundreds of ms). The
        # 100 ms target itself is a speed figure: benchmarks/load.py measures it; here, on a shared 2-core machine,
        # 25-107 ms were seen across runs of this test, so a 100 ms bound would fail on noise.
        assert probe.max_lag < 0.25, f"the event loop stalled {probe.max_lag * 1000:.0f} ms"
        print(f"429s met: {dict(limits.hits)}; longest loop stall {probe.max_lag * 1000:.1f} ms")
