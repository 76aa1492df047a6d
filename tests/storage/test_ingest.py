"""The write path (bot.storage.writes) on real databases: a batch leaves the same rows as the same writes one at a time,
and each reply stored and classified exactly once."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.db import make_sessionmaker
from bot.storage.models import DeclaredStance, Reply, ReviewItem, Stance
from bot.storage.records import NewReply, PostInfo, ReplyRef, StanceWrite
from bot.storage.repository import Repository
from bot.storage.rules import lock_members, member_lock_key
from tests.conftest import add_reply, save_stance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LABELS = ["unfair", "fair", "mutual_benefit", UNCLEAR]


async def _post(repo: Repository, catalog: PromptCatalog, guild_id: int) -> PostInfo:
    await repo.guilds.ensure_guild(guild_id, f"guild {guild_id}")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    return await repo.prompts.record_post(
        "alliance", guild_id=guild_id, channel_id=10 + guild_id, message_id=1000 + guild_id,
        thread_id=2000 + guild_id, posted_by=5,
    )  # fmt: skip


def _result(rng: random.Random) -> StanceResult:
    kind = rng.random()
    if kind < 0.15:
        label = rng.choice(LABELS[:3])
        return StanceResult(UNCLEAR, 0.4, f"low confidence ({label} 0.40)")  # goes to the review queue
    if kind < 0.25:
        return StanceResult(UNCLEAR, 1.0, "no words (emoji or symbols only)")
    return StanceResult(rng.choice(LABELS[:3]), rng.uniform(0.5, 0.99))


async def _state(engine: AsyncEngine, guild_id: int) -> dict[str, Any]:
    """A guild's counting state, keyed by (author, message id offset) so two guilds compare."""
    offset = guild_id * 100_000
    async with make_sessionmaker(engine)() as s:
        stances = (
            await s.execute(
                select(Reply.message_id, Stance.author_id, Stance.label, Stance.is_current, Stance.counted)
                .join(Reply, Reply.id == Stance.reply_id)
                .where(Stance.guild_id == guild_id)
            )
        ).all()
        reviews = (
            await s.execute(
                select(Reply.message_id, ReviewItem.status, ReviewItem.model_label)
                .join(Reply, Reply.id == ReviewItem.reply_id)
                .where(ReviewItem.guild_id == guild_id)
            )
        ).all()
        declared = (
            await s.execute(
                select(DeclaredStance.author_id, DeclaredStance.counted, DeclaredStance.model_label).where(
                    DeclaredStance.guild_id == guild_id
                )
            )
        ).all()
        statuses = (await s.execute(select(Reply.message_id, Reply.status).where(Reply.guild_id == guild_id))).all()
    return {
        "stances": sorted((m - offset, a, label, cur, cnt) for m, a, label, cur, cnt in stances),
        "reviews": sorted((m - offset, st, lab) for m, st, lab in reviews),
        "declared": sorted(tuple(d) for d in declared),
        "statuses": sorted((m - offset, st) for m, st in statuses),
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("count_mode", "overrides"), [("member", True), ("reply", False)])
async def test_a_batch_leaves_the_same_rows_as_one_at_a_time(
    engine: AsyncEngine, catalog: PromptCatalog, seed: int, count_mode: Any, overrides: bool
) -> None:
    repo = Repository(make_sessionmaker(engine), count_mode=count_mode, declared_overrides=overrides, review_below=0.6)
    store = repo.writes
    rng = random.Random(seed)
    one_by_one, batched = await _post(repo, catalog, 1), await _post(repo, catalog, 2)
    authors = list(range(50, 62))
    declaring, opting_out = rng.sample(authors, 3), rng.sample(authors, 2)
    for post in (one_by_one, batched):
        for author in declaring:
            await repo.writes.declare(post.message_id, author_id=author, label=rng.choice(LABELS[:3]))
        for author in opting_out:
            await repo.privacy.opt_out(post.guild_id, author)
    script = []
    for n in range(60):
        script.append((rng.choice(authors), n, rng.randrange(0, 240), _result(rng)))

    # The repository, one reply and one stance per transaction.
    refs_a: dict[int, ReplyRef] = {}
    for author, n, minute, result in script:
        ref = await add_reply(repo, one_by_one, message_id=100_000 + n, author_id=author, content=f"reply {n}",
            created_at=T0 + timedelta(minutes=minute),
        )  # fmt: skip
        if ref is not None:
            refs_a[n] = ref
            await save_stance(repo, ref, result, model_version="test")

    # The same, batched: all replies in one transaction, stances in three.
    items = [
        NewReply(batched, 200_000 + n, author, f"reply {n}", T0 + timedelta(minutes=minute))
        for author, n, minute, _ in script
    ]
    refs_b = dict(zip([n for _, n, _, _ in script], await store.add_replies(items), strict=True))
    assert {n for n, r in refs_b.items() if r is not None} == set(refs_a)
    writes = [StanceWrite(refs_b[n], result, "test") for _, n, _, result in script if refs_b[n] is not None]
    for chunk in (writes[:7], writes[7:30], writes[30:]):
        assert all(await store.save_stances(chunk))

    state = await _state(engine, 1)
    assert state == await _state(engine, 2)
    assert any(counted for *_, counted in state["stances"]) and state["reviews"] and state["declared"]

    # An edit and a deletion, then the edited reply's new stance: still the same.
    edited_n, deleted_n = rng.sample(sorted(refs_a), 2)
    new_result = _result(rng)
    ref_a = await repo.writes.edit_reply(100_000 + edited_n, "edited", T0 + timedelta(days=1))
    ref_b = await repo.writes.edit_reply(200_000 + edited_n, "edited", T0 + timedelta(days=1))
    assert ref_a is not None and ref_b is not None
    await save_stance(repo, ref_a, new_result, model_version="test")
    assert await store.save_stances([StanceWrite(ref_b, new_result, "test")]) == [True]
    await repo.writes.delete_reply(100_000 + deleted_n)
    await repo.writes.delete_reply(200_000 + deleted_n)
    assert await _state(engine, 1) == await _state(engine, 2)


async def test_each_reply_is_stored_once_and_opted_out_authors_not_at_all(
    repo: Repository, catalog: PromptCatalog
) -> None:
    store = repo.writes
    post = await _post(repo, catalog, 1)
    await repo.privacy.opt_out(1, 99)
    first = await store.add_replies([NewReply(post, 1, 7, "a", T0), NewReply(post, 1, 7, "a", T0)])
    assert first[0] is not None and first[1] is None  # the same event twice in one batch
    again = await store.add_replies(
        [NewReply(post, 1, 7, "a", T0), NewReply(post, 2, 8, "b", T0), NewReply(post, 3, 99, "c", T0)]
    )
    assert again[0] is None and again[1] is not None and again[2] is None
    assert await repo.tallies.count_replies() == 2
    assert again[1].content == "b" and again[1].prompt_slug == "alliance"  # type: ignore[union-attr]


async def test_a_stance_is_saved_once_and_never_for_a_changed_reply(repo: Repository, catalog: PromptCatalog) -> None:
    store = repo.writes
    post = await _post(repo, catalog, 1)
    refs = await store.add_replies([NewReply(post, m, 7 + m, f"text {m}", T0) for m in range(1, 5)])
    r1, r2, r3, r4 = (r for r in refs if r is not None)
    fair = StanceResult("fair", 0.9)
    # r1 twice in one batch, r2 once; then r1 again (a retry): only the first counts.
    batch = [StanceWrite(r1, fair, "v"), StanceWrite(r1, fair, "v"), StanceWrite(r2, fair, "v")]
    assert await store.save_stances(batch) == [True, False, True]
    assert await store.save_stances([StanceWrite(r1, fair, "v")]) == [False]
    # r3 was edited after it was classified: the stale stance is dropped; the edit's own counts.
    edited = await repo.writes.edit_reply(r3.message_id, "new text", T0)
    assert edited is not None
    assert await store.save_stances([StanceWrite(r3, fair, "v")]) == [False]
    assert await store.save_stances([StanceWrite(edited, fair, "v")]) == [True]
    # r4 was deleted meanwhile.
    await repo.writes.delete_reply(r4.message_id)
    assert await store.save_stances([StanceWrite(r4, fair, "v")]) == [False]
    async with repo.sessions() as s:
        per_reply = (await s.execute(select(Stance.reply_id).where(Stance.source == "model"))).scalars().all()
    assert sorted(per_reply) == sorted([r1.id, r2.id, r3.id])


async def test_pending_and_history_lookups(repo: Repository, catalog: PromptCatalog) -> None:
    store = repo.writes
    post = await _post(repo, catalog, 1)
    refs = await store.add_replies([NewReply(post, m, 7, f"t{m}", T0) for m in (10, 20, 30)])
    assert [r.message_id for r in await store.pending_after(0)] == [10, 20, 30]
    assert refs[0] is not None
    await store.save_stances([StanceWrite(refs[0], StanceResult("fair", 0.9), "v")])
    pending = await store.pending_after(0)
    assert [r.message_id for r in pending] == [20, 30]
    assert [r.message_id for r in await store.pending_after(pending[0].id)] == [30]
    assert await store.last_message_ids([post.thread_id, 12345]) == {post.thread_id: 30}
    assert await store.known_message_ids([10, 11, 30]) == {10, 30}
    await store.ping()


async def test_the_lock_key_is_the_repositorys(repo: Repository) -> None:
    seen: list[dict[str, list[int]]] = []

    async def execute(_statement: Any, params: dict[str, list[int]]) -> None:
        seen.append(params)

    pg_session = SimpleNamespace(bind=SimpleNamespace(dialect=SimpleNamespace(name="postgresql")), execute=execute)
    for member in [(1, 2, 3), (7, 1574535663968059392, 1574535664060334080), (2**40, 2**62, 2**62 + 5)]:
        await lock_members(pg_session, [member])  # type: ignore[arg-type]
        assert list(seen[-1].values()) == [[member_lock_key(*member)]]
