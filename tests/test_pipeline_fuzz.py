"""Property-based: any text a member could send (arbitrary Unicode, lone surrogates included, and arbitrary bytes
decoded as a gateway or a file reader might) goes through the real pipeline, the shipped model and each database:
stored exactly once, classified, exported as CSV and JSON that read back, and forgotten on request."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from bot.config import load_settings, model_registry
from bot.core.export import rows_to_csv, rows_to_json, spreadsheet_safe
from bot.core.prompts import PromptCatalog
from bot.core.registry import ModelRegistry
from bot.core.service import StanceService
from bot.core.text import storage_forms
from bot.durability import REJECTED, Spool
from bot.pipeline import PipelineOptions, ReplyPipeline
from bot.storage.models import Reply, Stance
from bot.storage.records import PostInfo
from bot.storage.repository import Repository
from bot.storage.writes import Writes

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
GUILD = 1
_ids = count(1)

#: Any code point, surrogates and unassigned ones included.
ANY_CHAR = st.characters(codec=None, categories=None)
DECODED_BYTES = st.tuples(st.binary(max_size=60), st.sampled_from(["surrogateescape", "replace"])).map(
    lambda raw: raw[0].decode("utf-8", errors=raw[1])
)
#: Text with the characters that broke things before: NUL, escapes, zero-width and bidi controls, formula starts.
SPICY = st.lists(
    st.sampled_from(["\x00", "\x1b[2J", "\u200b", "\u202e", "\ud800", "=", "-", "@", "\r", "fair", "unfair ", "日本"]),
    max_size=8,
).map("".join)
REPLY_TEXT = st.one_of(st.text(ANY_CHAR, max_size=80), DECODED_BYTES, SPICY)


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    """The shipped models, as the bot loads them."""
    return model_registry(load_settings(None, environ={}))


@pytest.fixture
async def pipeline(
    repo: Repository, catalog: PromptCatalog, registry: ModelRegistry, tmp_path: Path
) -> AsyncIterator[tuple[ReplyPipeline, PostInfo]]:
    await repo.guilds.ensure_guild(GUILD, "guild")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    post = await repo.prompts.record_post(
        "alliance", guild_id=GUILD, channel_id=10, message_id=11, thread_id=12, posted_by=5
    )
    spool = Spool(tmp_path / "spool")
    spool.open()
    service = StanceService(catalog, registry.classifier, batch_size=16, max_wait_ms=1, max_queue=1000)
    options = PipelineOptions(write_max_wait_ms=1, retry_initial_s=0.02, retry_max_s=0.1)
    made = ReplyPipeline(Writes(repo.db), service, spool=spool, options=options)
    yield made, post
    await made.close()
    await service.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(REPLY_TEXT, min_size=1, max_size=4))
async def test_any_reply_is_stored_once_classified_exported_and_forgotten(
    pipeline: tuple[ReplyPipeline, PostInfo], repo: Repository, tmp_path: Path, texts: list[str]
) -> None:
    pipe, post = pipeline
    author = next(_ids) + 10_000
    ids = [next(_ids) for _ in texts]
    for mid, text in zip(ids, texts, strict=True):
        outcome = await pipe.on_reply(post, message_id=mid, author_id=author, content=text, created_at=T0, wait=True)
        assert outcome is not None and outcome.reply.message_id == mid
    assert pipe.database_up and not pipe.degraded and pipe.spooled == 0
    assert not (tmp_path / "spool" / REJECTED).exists()

    async with repo.sessions() as session:
        rows = (await session.execute(select(Reply.message_id, Reply.content).where(Reply.message_id.in_(ids)))).all()
        stances = await session.scalar(
            select(func.count(Stance.id)).join(Reply, Reply.id == Stance.reply_id).where(Reply.message_id.in_(ids))
        )
    stored = dict(rows)
    assert sorted(stored) == sorted(ids) and len(rows) == len(ids)  # each once
    assert stances == len(ids)  # each classified once
    for mid, text in zip(ids, texts, strict=True):
        assert stored[mid] in storage_forms(text)  # as written where the database holds it, else a safe form

    exported = [r for r in await repo.privacy.export_rows("alliance", GUILD) if r.message_id in stored]
    assert sorted(r.message_id for r in exported) == sorted(ids)
    assert all(r.label is not None for r in exported)
    from_csv = {int(r["message_id"]): r["text"] for r in csv.DictReader(io.StringIO(rows_to_csv(exported), newline=""))}
    assert from_csv == {mid: spreadsheet_safe(text) for mid, text in stored.items()}
    from_json = {int(r["message_id"]): r["text"] for r in json.loads(rows_to_json(exported))}
    assert from_json == stored

    await repo.privacy.forget_member(author)
    assert (await repo.privacy.member_data(author))["replies"] == []
    async with repo.sessions() as session:
        assert await session.scalar(select(func.count(Reply.id)).where(Reply.message_id.in_(ids))) == 0
