"""Digest figures from the database: each figure follows its documented definition."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.digest import render_markdown, render_terminal
from bot.core.periods import Cadence
from bot.core.prompts import PromptCatalog
from bot.storage.db import make_sessionmaker
from bot.storage.models import Base
from bot.storage.repository import Repository
from tests.storage.conftest import (
    GUILD,
    MONDAY_9,
    _at,
    _post,
    _say,
    _store,
)

# -- figures --------------------------------------------------------------------------------------------------


async def test_figures_follow_the_documented_definitions(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("alliance")
    post = await _post(repo, catalog)
    cadence = Cadence("weekly", 0, time(0), "UTC")  # ISO weeks in UTC
    w1, w2, w3 = _at("2026-03-02 12:00"), _at("2026-03-09 12:00"), _at("2026-03-16 12:00")
    # week 1: members 1, 2 unfair, 3 fair
    await _say(repo, post, 1, w1, "unfair", 0.8)
    await _say(repo, post, 2, w1, "unfair", 0.7)
    await _say(repo, post, 3, w1 + timedelta(hours=1), "fair", 0.6)
    # week 2: member 3 changes to unfair; 4 is unclear; 7 says fair, then something unclear (fair counts);
    # member 5's reply is deleted
    await _say(repo, post, 3, w2, "unfair", 0.95, "I changed my mind @everyone <@123>")
    await _say(repo, post, 4, w2, "unclear", 0.99)
    await _say(repo, post, 7, w2 + timedelta(hours=1), "fair", 0.55)
    await _say(repo, post, 7, w2 + timedelta(hours=2), "unclear", 0.9)
    deleted = await _say(repo, post, 5, w2, "fair", 0.99)
    await repo.writes.delete_reply(deleted)
    # week 3: member 6
    await _say(repo, post, 6, w3, "mutual_benefit", 0.5)

    period = cadence.period_containing(w2)
    digest = await _store(engine).digests.build_digest(prompt, GUILD, period, cadence, history=3)
    before, week1, week2 = digest.history
    assert (before.period.start, week1.period.start, week2.period) == (_at("2026-02-23"), _at("2026-03-02"), period)
    assert before.counted == 0 and before.replies == 0
    assert week1.counts == {"unfair": 2, "fair": 1, "mutual_benefit": 0, "unclear": 0}
    assert week2.counts == {"unfair": 1, "fair": 1, "mutual_benefit": 0, "unclear": 1}  # week 3 not included
    assert (week2.replies, week2.members, week2.classified, week2.unclear) == (4, 3, 4, 2)  # deleted one left out
    assert (week1.replies, week1.members) == (3, 3)
    assert [(q.label, q.author_id) for q in digest.quotes] == [("unfair", 3), ("fair", 7)]  # 5's was deleted
    quote = digest.quotes[0]
    assert quote.confidence == pytest.approx(0.95)
    assert "@\u200beveryone" in quote.safe_text() and "<@123>" not in quote.safe_text()
    # the overall tally is the live one, whatever the period
    tally = await repo.tallies.tally(prompt, GUILD)
    assert dict(digest.overall) == dict(tally.counts)
    assert digest.overall_total == tally.total == 6


async def test_declared_stances_stand_beside_the_models(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    post = await _post(repo, catalog)
    when = _at("2026-03-10 12:00")
    await _say(repo, post, 1, when, "unfair")
    await _say(repo, post, 2, when, "fair")
    for author, label in ((1, "unfair"), (2, "unfair"), (3, "mutual_benefit")):  # 1 agrees, 2 not, 3 never replied
        await repo.writes.declare(post.message_id, author_id=author, label=label)
    cadence = Cadence("daily", tz="UTC")
    digest = await _store(engine).digests.build_digest(
        catalog.get("alliance"), GUILD, cadence.period_containing(when), cadence
    )
    assert digest.declared is not None
    assert (digest.declared.declared, digest.declared.both, digest.declared.agree) == (
        {"unfair": 2, "mutual_benefit": 1},
        2,
        1,
    )
    sentence = "Declared with the buttons: unfair 2, mutual_benefit 1 (3 members); the model agrees for 1 of 2 (50%)."
    assert sentence in render_terminal(digest).splitlines()
    assert sentence in render_markdown(digest)
    nobody = await _store(engine).digests.build_digest(
        catalog.get("defense"), GUILD, cadence.period_containing(when), cadence
    )
    assert nobody.declared is None and "Declared" not in render_terminal(nobody)


async def test_every_reply_counts_in_reply_mode(engine: AsyncEngine, catalog: PromptCatalog) -> None:
    repo = Repository(make_sessionmaker(engine), count_mode="reply")
    post = await _post(repo, catalog)
    when = _at("2026-03-10 12:00")
    for n, label in enumerate(["fair", "unclear", "fair", "unfair"]):
        await _say(repo, post, 1, when + timedelta(minutes=n), label)
    cadence = Cadence("daily", tz="UTC")
    digest = await repo.digests.build_digest(catalog.get("alliance"), GUILD, cadence.period_containing(when), cadence)
    assert digest.current.counts == {"unfair": 1, "fair": 2, "mutual_benefit": 0, "unclear": 1}
    assert digest.current.members == 1


@pytest.mark.skipif("opt_outs" not in Base.metadata.tables, reason="no opt-outs in this schema")
async def test_members_who_opted_out_are_left_out(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    post = await _post(repo, catalog)
    when = _at("2026-03-10 12:00")
    await _say(repo, post, 1, when, "unfair", 0.99, "quote me not")
    await _say(repo, post, 2, when, "fair", 0.6)
    async with engine.begin() as conn:
        await conn.execute(Base.metadata.tables["opt_outs"].insert().values(guild_id=GUILD, user_id=1, created_at=when))
    cadence = Cadence("weekly", tz="UTC")
    digest = await _store(engine).digests.build_digest(
        catalog.get("alliance"), GUILD, cadence.period_containing(when), cadence
    )
    assert digest.current.counts["unfair"] == 0 and digest.current.members == 1
    assert digest.quote_for("unfair") is None


async def test_figures_for_a_prompt_never_posted_are_zero(engine: AsyncEngine, catalog: PromptCatalog) -> None:
    period = MONDAY_9.period_containing(_at("2026-03-10 12:00"))
    digest = await _store(engine).digests.build_digest(catalog.get("defense"), GUILD, period, MONDAY_9)
    assert digest.current.counted == 0
    assert len(digest.history) == 8
    assert digest.quotes == ()
