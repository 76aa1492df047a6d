"""End to end, in process: replies posted while the bot was down are read from the thread's history when it
starts again (the catch-up cog), classified once, and the live reply before the outage is not stored twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import bot.app
from bot.core.encoder import SentenceEncoder
from bot.storage.repository import Repository
from tests.e2e.conftest import ACCEPTANCE_REPLIES, World, e2e_settings, post_prompt, running_bot


def test_the_bot_loads_the_catch_up_cog_by_default() -> None:
    assert "bot.cogs.catchup" in bot.app.EXTENSIONS


async def _classified(repo: Repository, message_ids: list[int], timeout: float = 30) -> bool:  # noqa: ASYNC109
    for _ in range(int(timeout / 0.1)):
        if all([await repo.tallies.stance_of(m) for m in message_ids]):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_replies_posted_while_the_bot_was_down_are_caught_up(
    world: World, db_url: str, build_dir: Path, encoder: SentenceEncoder
) -> None:
    thread_id = await post_prompt(world)
    author, text, _ = ACCEPTANCE_REPLIES[0]
    live = await world.reply(thread_id, author, text)
    await world.runtime.aclose()  # the bot goes away; the server (Discord) keeps the thread's history

    missed = []
    for author, text, _ in ACCEPTANCE_REPLIES[1:]:
        missed.append(int((await world.server.send_message(thread_id, world.member(author), text))["id"]))
    helper = world.server.create_member(world.guild, "helper", bot=True)
    await world.server.send_message(thread_id, helper, "beep")  # not a member reply

    async with running_bot(e2e_settings(db_url, build_dir), world.server, encoder=encoder) as runtime:
        repo = runtime.services.repo
        assert await _classified(repo, missed)
        assert await repo.tallies.count_replies() == 3  # the live one once, the two missed ones, not the bot's message
        assert (await repo.tallies.stance_of(live.reply.message_id)).label == live.result.label  # type: ignore[union-attr]
        cog = runtime.bot.get_cog("CatchUp")
        assert cog is not None
        await asyncio.wait_for(cog.finished.wait(), 10)  # type: ignore[attr-defined]
        report = cog.last_report  # type: ignore[attr-defined]
        assert report.stored == 2 and report.failed_threads == 0

        # A second start reads the thread again and stores nothing new.
        await cog.run()  # type: ignore[attr-defined]
        assert cog.last_report.stored == 0  # type: ignore[attr-defined]
        assert await repo.tallies.count_replies() == 3
