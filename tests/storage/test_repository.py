"""The repository on real databases: replies stored once, stances counted by the counting rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.records import PostInfo
from bot.storage.repository import Repository
from tests.conftest import add_reply, save_stance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


async def _post(repo: Repository, catalog: PromptCatalog, guild_id: int = 1) -> PostInfo:
    await repo.guilds.ensure_guild(guild_id, "Test guild")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    return await repo.prompts.record_post(
        "alliance", guild_id=guild_id, channel_id=10, message_id=100 + guild_id, thread_id=100 + guild_id, posted_by=5
    )


async def _reply(repo: Repository, post: PostInfo, mid: int, author: int, label: str, minutes: int = 0) -> None:
    ref = await add_reply(
        repo, post, message_id=mid, author_id=author, content=f"reply {mid}", created_at=T0 + timedelta(minutes=minutes)
    )
    assert ref is not None
    await save_stance(repo, ref, StanceResult(label, 0.9), model_version="test")


async def test_a_reply_is_stored_once(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    first = await add_reply(repo, post, message_id=1, author_id=7, content="hi", created_at=T0)
    again = await add_reply(repo, post, message_id=1, author_id=7, content="hi", created_at=T0)
    assert first is not None
    assert again is None
    assert await repo.tallies.count_replies() == 1


async def test_tally_counts_latest_stance_per_member(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair", minutes=0)
    await _reply(repo, post, 2, author=8, label="fair", minutes=1)
    await _reply(repo, post, 3, author=7, label="mutual_benefit", minutes=2)  # member 7 changes their mind
    await _reply(repo, post, 4, author=8, label="unclear", minutes=3)  # an unclear reply does not erase a stance
    tally = await repo.tallies.tally(catalog.get("alliance"), 1)
    assert dict(tally.counts) == {"mutual_benefit": 1, "fair": 1}
    assert tally.total == 2
    assert tally.share("fair") == 0.5


async def test_reply_mode_counts_every_reply(engine, catalog: PromptCatalog) -> None:  # type: ignore[no-untyped-def]
    from bot.storage.db import make_sessionmaker

    repo = Repository(make_sessionmaker(engine), count_mode="reply")
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    await _reply(repo, post, 2, author=7, label="unfair", minutes=1)
    assert (await repo.tallies.tally(catalog.get("alliance"), 1)).count("unfair") == 2


async def test_edit_and_delete(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    edited = await repo.writes.edit_reply(1, "changed my mind", T0 + timedelta(hours=1))
    assert edited is not None
    assert await repo.writes.edit_reply(1, "changed my mind", T0) is None  # same text: nothing to do
    assert (await repo.writes.pending_after(0))[0].message_id == 1
    await save_stance(repo, edited, StanceResult("fair", 0.8), model_version="test")
    assert dict((await repo.tallies.tally(catalog.get("alliance"), 1)).counts) == {"fair": 1}
    assert await repo.writes.delete_reply(1)
    assert not await repo.writes.delete_reply(1)
    assert (await repo.tallies.tally(catalog.get("alliance"), 1)).total == 0
    assert await repo.tallies.stance_of(1) is not None  # history stays; it just no longer counts


async def test_guilds_are_separate(repo: Repository, catalog: PromptCatalog) -> None:
    a = await _post(repo, catalog, guild_id=1)
    b = await _post(repo, catalog, guild_id=2)
    await _reply(repo, a, 1, author=7, label="unfair")
    await _reply(repo, b, 2, author=7, label="fair")
    assert dict((await repo.tallies.tally(catalog.get("alliance"), 1)).counts) == {"unfair": 1}
    assert dict((await repo.tallies.tally(catalog.get("alliance"), 2)).counts) == {"fair": 1}
