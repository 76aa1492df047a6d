"""The reply pipeline on real databases, with faults injected: a full model queue, a database outage, a crash,
a model that fails. A small deterministic classifier stands in for the model (these tests are about delivery)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select

from bot.core.errors import StorageError
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.service import StanceService
from bot.core.stance import StanceResult
from bot.durability import Spool
from bot.pipeline import PipelineOptions, ReplyBufferedError, ReplyOutcome, ReplyPipeline
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.storage.models import Reply, Stance
from bot.storage.records import NewReply, PostInfo
from bot.storage.repository import Repository
from bot.storage.writes import Writes
from tests.conftest import PG_DSN, WANT_PG

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FAST = PipelineOptions(write_max_wait_ms=1, retry_initial_s=0.02, retry_max_s=0.1, max_attempts=3)


class Keyword:
    """``fair`` if the text says so, else ``unfair``; raises for ``boom`` (the first ``fail`` times) and always
    for ``poison``."""

    version = "keyword:1"
    threshold = 0.0

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.calls = 0

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        self.calls += 1
        if any("poison" in t for t in texts) or (self.fail > 0 and any("boom" in t for t in texts)):
            self.fail -= 1
            raise RuntimeError("the model fell over")
        return [StanceResult("fair" if "fair" in t else "unfair", 0.9) for t in texts]


class Outage:
    """Makes the database look down for the pipeline (its batched store and the repository's edits/deletes)."""

    def __init__(self, store: Writes) -> None:
        self.down = False
        for name in ("add_replies", "save_stances", "ping", "pending_after", "edit_reply", "delete_reply"):
            setattr(store, name, self._guard(getattr(store, name)))

    def _guard(self, method: Any) -> Any:
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise StorageError("The database is unavailable right now.")
            return await method(*args, **kwargs)

        return guarded


@pytest.fixture
async def post(repo: Repository, catalog: PromptCatalog) -> PostInfo:
    await repo.guilds.ensure_guild(1, "guild")
    for prompt in catalog:
        await repo.prompts.sync_prompt(prompt)
    return await repo.prompts.record_post(
        "alliance", guild_id=1, channel_id=10, message_id=11, thread_id=12, posted_by=5
    )


def _service(catalog: PromptCatalog, model: Keyword | None = None, max_queue: int = 1000) -> StanceService:
    model = model or Keyword()
    return StanceService(catalog, lambda _prompt: model, batch_size=16, max_wait_ms=1, max_queue=max_queue)


@pytest.fixture
async def make(repo: Repository, catalog: PromptCatalog, tmp_path: Path) -> AsyncIterator[Any]:
    """Build pipelines (closed at the end); each has an Outage switch and collects background outcomes."""
    made: list[ReplyPipeline] = []

    def build(
        *,
        model: Keyword | None = None,
        max_queue: int = 1000,
        spool: Path | None = None,
        max_bytes: int = 1 << 20,
        on_missed: Any = None,
    ) -> ReplyPipeline:
        folder = spool or tmp_path / "spool"
        sp = Spool(folder, max_bytes=max_bytes)
        sp.open()
        store = Writes(repo.db)  # its own, so that each pipeline's outage switch is its own
        notified: list[ReplyOutcome] = []
        service = _service(catalog, model, max_queue)
        pipeline = ReplyPipeline(store, service, spool=sp, options=FAST, notify=notified.append, on_missed=on_missed)
        pipeline.outage = Outage(store)  # type: ignore[attr-defined]
        pipeline.notified = notified  # type: ignore[attr-defined]
        made.append(pipeline)
        return pipeline

    yield build
    for pipeline in made:
        await pipeline.close()
        await pipeline.service.close()


def reply(pipeline: ReplyPipeline, post: PostInfo, mid: int, text: str | None = None, **kw: Any) -> Any:
    return pipeline.on_reply(
        post, message_id=mid, author_id=1000 + mid % 37, content=text or f"reply {mid}", created_at=T0, **kw
    )


async def model_stances(repo: Repository) -> dict[int, int]:
    """Message id -> number of model stances."""
    async with repo.sessions() as s:
        rows = await s.execute(
            select(Reply.message_id, func.count(Stance.id))
            .join(Stance, Stance.reply_id == Reply.id)
            .where(Stance.source == "model")
            .group_by(Reply.message_id)
        )
        return {int(m): int(n) for m, n in rows}


async def test_replies_are_stored_then_classified_exactly_once(make: Any, post: PostInfo, repo: Repository) -> None:
    pipeline = make()
    ids = list(range(1, 301))
    results = await asyncio.gather(*(reply(pipeline, post, m) for m in ids + ids[:50]))  # 50 duplicate events
    outcomes = [r for r in results if r is not None]
    assert sorted(o.reply.message_id for o in outcomes) == ids
    assert await model_stances(repo) == dict.fromkeys(ids, 1)
    assert pipeline.idle()


async def test_a_full_model_queue_leaves_replies_pending_for_the_sweep(
    make: Any, post: PostInfo, repo: Repository
) -> None:
    pipeline = make(max_queue=8)
    ids = list(range(1, 401))
    results = await asyncio.gather(*(reply(pipeline, post, m) for m in ids))
    answered = [r for r in results if r is not None]
    assert 0 < len(answered) < len(ids)  # some waited for the model, the rest were deferred
    await pipeline.wait_idle(30)
    assert await model_stances(repo) == dict.fromkeys(ids, 1)
    notified: list[ReplyOutcome] = pipeline.notified
    assert sorted(o.reply.message_id for o in answered + notified) == ids


async def test_a_database_outage_spools_writes_and_replays_them_in_order(
    make: Any, post: PostInfo, repo: Repository
) -> None:
    pipeline = make()
    before = await asyncio.gather(*(reply(pipeline, post, m, "fair enough") for m in (1, 2, 3)))
    assert all(before)
    pipeline.outage.down = True
    during = await asyncio.gather(*(reply(pipeline, post, m) for m in range(10, 60)))
    assert during == [None] * 50
    assert await pipeline.on_edit(1, "changed my mind", T0) is None
    assert await pipeline.on_delete(2) is False
    with pytest.raises(ReplyBufferedError):
        await reply(pipeline, post, 60, wait=True)  # someone is waiting: they are told it is kept
    await asyncio.sleep(0.3)
    assert pipeline.spooled == 53 and not pipeline.database_up

    pipeline.outage.down = False
    await pipeline.wait_idle(30)
    assert pipeline.spooled == 0 and pipeline.database_up
    stances = await model_stances(repo)
    assert {m: n for m, n in stances.items() if m >= 10} == dict.fromkeys(range(10, 61), 1)
    assert stances[1] == 2  # the edit, replayed after the outage, was classified again
    assert (await repo.tallies.stance_of(1)).label == "unfair"  # type: ignore[union-attr]
    async with repo.sessions() as session:  # the delete was replayed too
        assert await session.scalar(select(Reply.deleted_at).where(Reply.message_id == 2)) is not None
    assert await repo.tallies.count_replies() == 54


async def test_spooled_writes_survive_a_restart(make: Any, post: PostInfo, repo: Repository, tmp_path: Path) -> None:
    first = make(spool=tmp_path / "shared")
    first.outage.down = True
    await asyncio.gather(*(reply(first, post, m) for m in range(1, 21)))
    await asyncio.sleep(0.2)
    assert first.spooled == 20
    await first.close()  # the process ends while the database is still down

    second = make(spool=tmp_path / "shared")
    assert second.spooled == 20
    await second.resume()
    await second.wait_idle(30)
    assert await model_stances(repo) == dict.fromkeys(range(1, 21), 1)
    assert len(second.notified) == 20


async def test_a_failed_classification_is_retried_and_a_poisonous_one_given_up(
    make: Any, post: PostInfo, repo: Repository
) -> None:
    pipeline = make(model=Keyword(fail=2))
    results = await asyncio.gather(
        reply(pipeline, post, 1, "boom, fair"), reply(pipeline, post, 2, "poison"), reply(pipeline, post, 3, "fine")
    )
    assert results[0] is None and results[1] is None  # failed on first try; retried in the background
    for _ in range(100):
        if len(await model_stances(repo)) == 3:
            break
        await asyncio.sleep(0.05)
    assert await model_stances(repo) == {1: 1, 2: 1, 3: 1}
    assert (await repo.tallies.stance_of(1)).label == "fair"  # type: ignore[union-attr]
    poisoned = await repo.tallies.stance_of(2)
    assert poisoned is not None and poisoned.label == UNCLEAR and poisoned.reason == "classification failed"


async def test_replies_left_pending_by_a_crash_are_classified_on_resume(
    make: Any, post: PostInfo, repo: Repository
) -> None:
    await repo.writes.add_replies([NewReply(post, m, 7, f"left {m}", T0) for m in range(1, 31)])
    pipeline = make()
    await pipeline.resume()
    await pipeline.wait_idle(30)
    assert await model_stances(repo) == dict.fromkeys(range(1, 31), 1)
    assert len(pipeline.notified) == 30


async def test_when_the_spool_is_full_the_thread_is_caught_up_later(
    make: Any, post: PostInfo, repo: Repository
) -> None:
    missed: list[set[int]] = []

    async def catch_up(threads: set[int]) -> None:
        missed.append(threads)

    pipeline = make(max_bytes=1200, on_missed=catch_up)
    pipeline.outage.down = True
    await asyncio.gather(*(reply(pipeline, post, m, "x" * 100) for m in range(1, 31)))
    kept = pipeline.spooled
    assert 0 < kept < 30
    pipeline.outage.down = False
    await pipeline.wait_idle(30)
    assert missed == [{post.thread_id}]
    assert len(await model_stances(repo)) == kept


async def stored_text(repo: Repository, message_id: int) -> str | None:
    async with repo.sessions() as session:
        return await session.scalar(select(Reply.content).where(Reply.message_id == message_id))


async def test_a_reply_with_nul_is_stored_and_classified_and_is_no_outage(
    make: Any, post: PostInfo, repo: Repository, db_url: str, tmp_path: Path
) -> None:
    pipeline = make()
    outcome = await reply(pipeline, post, 1, "it is\x00 fair\x1b[2J \ud800", wait=True)
    assert outcome is not None and outcome.result.label == "fair"
    on_pg = db_url.startswith("postgresql")
    # PostgreSQL cannot hold U+0000: it keeps what Discord shows; SQLite keeps the text as written (well formed).
    expected = "it is fair[2J \ufffd" if on_pg else "it is\x00 fair\x1b[2J \ufffd"
    assert await stored_text(repo, 1) == expected
    edited = await pipeline.on_edit(1, "now\x00 against\x00 it", T0)
    assert edited is not None and edited.result.label == "unfair"
    assert await stored_text(repo, 1) == ("now against it" if on_pg else "now\x00 against\x00 it")
    assert await model_stances(repo) == {1: 2}
    assert pipeline.database_up and not pipeline.degraded and pipeline.spooled == 0
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


async def test_spooled_replies_the_database_refuses_are_stored_in_a_safe_form_not_rejected(
    make: Any, post: PostInfo, repo: Repository, tmp_path: Path
) -> None:
    pipeline = make()
    await reply(pipeline, post, 1, "first, fair", wait=True)
    pipeline.outage.down = True
    assert await reply(pipeline, post, 2, "un\x00fair \udcff") is None  # bytes decoded with surrogateescape
    assert await pipeline.on_edit(1, "still\x00 fair", T0) is None
    await asyncio.sleep(0.2)
    assert pipeline.spooled == 2
    pipeline.outage.down = False
    await pipeline.wait_idle(30)
    assert await model_stances(repo) == {1: 2, 2: 1}
    assert (await stored_text(repo, 2) or "").replace("\x00", "") == "unfair \ufffd"
    assert (await stored_text(repo, 1) or "").replace("\x00", "") == "still fair"
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


async def test_a_reply_refused_for_something_else_is_not_an_outage_and_not_parked(
    make: Any, post: PostInfo, repo: Repository, tmp_path: Path
) -> None:
    pipeline = make()
    gone = replace(post, id=post.id + 999)  # a post the database does not have: the row breaks a foreign key
    assert await reply(pipeline, gone, 1, "fair") is None
    assert await reply(pipeline, post, 2, "fair", wait=True) is not None
    assert pipeline.database_up and not pipeline.degraded
    assert await stored_text(repo, 1) is None
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


async def test_forget_me_and_mydata_reach_replies_waiting_in_the_spool(
    make: Any, post: PostInfo, repo: Repository, tmp_path: Path
) -> None:
    pipeline = make()
    pipeline.outage.down = True
    author = 1000 + 5 % 37
    await reply(pipeline, post, 5, "secret words, fair")
    await asyncio.sleep(0.2)
    assert pipeline.spooled == 1
    assert any(b"secret words" in p.read_bytes() for p in (tmp_path / "spool").glob("segment-*"))
    with pytest.raises(StorageError):
        await pipeline.settle(timeout=0.3)  # still down: the privacy command says so rather than miss it
    pipeline.outage.down = False
    await pipeline.settle()
    data = await repo.privacy.member_data(author)
    assert [r["text"] for r in data["replies"]] == ["secret words, fair"]
    await repo.privacy.forget_member(author)
    assert (await repo.privacy.member_data(author))["replies"] == []
    leftovers = [p for p in (tmp_path / "spool").iterdir() if p.is_file() and b"secret" in p.read_bytes()]
    assert leftovers == []


@pytest.fixture
async def latin1_repo() -> AsyncIterator[Repository]:
    """A migrated PostgreSQL database in LATIN1, which cannot hold most of Unicode."""
    if not WANT_PG:
        pytest.skip("STANCEBOT_TEST_POSTGRES=0: PostgreSQL variant left out on request")
    name = f"stancebot_latin1_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(
            f"CREATE DATABASE \"{name}\" ENCODING 'LATIN1' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    finally:
        await conn.close()
    url = PG_DSN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    try:
        await upgrade(engine)
        yield Repository(make_sessionmaker(engine))
    finally:
        await engine.dispose()
        conn = await asyncpg.connect(PG_DSN, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.mark.postgres
async def test_text_a_database_cannot_hold_is_stored_in_a_safe_form(
    latin1_repo: Repository, catalog: PromptCatalog, tmp_path: Path
) -> None:
    repo = latin1_repo
    await repo.guilds.ensure_guild(1, "guild")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    post = await repo.prompts.record_post(
        "alliance", guild_id=1, channel_id=10, message_id=11, thread_id=12, posted_by=5
    )
    spool = Spool(tmp_path / "spool")
    spool.open()
    pipeline = ReplyPipeline(Writes(repo.db), _service(catalog), spool=spool, options=FAST)
    try:
        kept = await reply(pipeline, post, 1, "café: fair", wait=True)  # LATIN1 holds this as written
        safe = await reply(pipeline, post, 2, "日本 is fair\x00", wait=True)
        assert kept is not None and safe is not None and safe.result.label == "fair"
        assert await stored_text(repo, 1) == "café: fair"
        assert await stored_text(repo, 2) == "\\u65e5\\u672c is fair"
        assert pipeline.database_up and not pipeline.degraded
        assert not (tmp_path / "spool" / "rejected.jsonl").exists()
    finally:
        await pipeline.close()
        await pipeline.service.close()
