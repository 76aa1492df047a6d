"""Schedules that survive restarts, and digests and prompts posted exactly once (also by racing processes)."""

from __future__ import annotations

import asyncio
from datetime import datetime, time, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.periods import Cadence, Period
from bot.core.prompts import PromptCatalog
from bot.core.shards import ShardSet, shard_of
from bot.scheduler import Scheduler
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.storage.models import DigestPost, DigestSchedule
from bot.storage.repository import Repository
from bot.storage.schedules import STALE_CLAIM
from tests.storage.conftest import (
    BERLIN,
    GUILD,
    MONDAY_9,
    FakeClock,
    FakePublisher,
    _at,
    _post,
    _schedule,
    _scheduler,
    _store,
)

# -- schedules and the scheduler ------------------------------------------------------------------------------


async def test_weekly_schedule_fires_at_local_time_across_dst(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))  # a Wednesday, CET (UTC+1)
    await _schedule(repo, engine, catalog, clock)
    publisher = FakePublisher()
    scheduler = _scheduler(engine, catalog, clock, publisher)
    [info] = await scheduler.schedules.schedules(GUILD)
    assert info.next_due_at == _at("2026-03-23 08:00")  # Monday 09:00 CET

    clock.now = _at("2026-03-23 07:59:59")
    assert await scheduler.run_due() == []
    clock.now = _at("2026-03-23 08:00")
    [outcome] = await scheduler.run_due()
    assert outcome.result == "posted"
    claim, digest = publisher.digests[0]
    assert (claim.period.start, claim.period.end) == (_at("2026-03-16 08:00"), _at("2026-03-23 08:00"))
    assert not digest.late

    [info] = await scheduler.schedules.schedules(GUILD)
    assert info.next_due_at == _at("2026-03-30 07:00")  # Monday 09:00 CEST (UTC+2): the week had 167 hours
    clock.now = _at("2026-03-30 07:00")
    await scheduler.run_due()
    claim, _ = publisher.digests[1]
    assert (claim.period.start, claim.period.end) == (_at("2026-03-23 08:00"), _at("2026-03-30 07:00"))
    assert len(publisher.digests) == 2


async def test_restart_mid_period_posts_no_duplicate(
    repo: Repository, engine: AsyncEngine, db_url: str, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-20 12:00"))
    schedule_id = await _schedule(repo, engine, catalog, clock)
    first = FakePublisher()
    clock.now = _at("2026-03-23 08:00:30")
    await _scheduler(engine, catalog, clock, first).run_due()
    assert len(first.digests) == 1

    # A new process (new engine, new scheduler) on the same database, in the middle of the next week.
    second_engine = make_engine(db_url)
    try:
        second = FakePublisher()
        clock.now = _at("2026-03-26 15:00")
        restarted = _scheduler(second_engine, catalog, clock, second)
        assert await restarted.run_due() == []
        # Even if the first process died after posting but before moving the schedule on, nothing is posted twice.
        async with second_engine.begin() as conn:
            await conn.execute(
                update(DigestSchedule)
                .where(DigestSchedule.id == schedule_id)
                .values(next_due_at=_at("2026-03-23 08:00"))
            )
        [outcome] = await restarted.run_due()
        assert outcome.result == "already-claimed"
        assert second.digests == []
        assert (await restarted.schedules.schedules(GUILD))[0].next_due_at == _at("2026-03-30 07:00")
    finally:
        await second_engine.dispose()


async def test_missed_digest_is_posted_once_and_late(
    repo: Repository, engine: AsyncEngine, db_url: str, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))
    await _schedule(repo, engine, catalog, clock)
    # The bot was down from before Monday 23 March until Wednesday 8 April: three digests fell due.
    clock.now = _at("2026-04-08 10:00")
    publisher = FakePublisher()
    [outcome] = await _scheduler(engine, catalog, clock, publisher).run_due()
    assert outcome.result == "posted-late"
    [(claim, digest)] = publisher.digests
    assert digest.late and claim.late
    assert (claim.period.start, claim.period.end) == (_at("2026-03-30 07:00"), _at("2026-04-06 07:00"))
    # Started again (e.g. crash-looping): not posted again.
    other_engine = make_engine(db_url)
    try:
        again = FakePublisher()
        clock.advance(minutes=3)
        assert await _scheduler(other_engine, catalog, clock, again).run_due() == []
        assert again.digests == []
    finally:
        await other_engine.dispose()
    async with engine.connect() as conn:
        rows = (await conn.execute(select(DigestPost.late, DigestPost.posted_at))).all()
    assert len(rows) == 1
    assert rows[0].late and rows[0].posted_at is not None


async def test_failed_post_is_retried_once_stale_and_never_doubled(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))
    await _schedule(repo, engine, catalog, clock)
    publisher = FakePublisher(fail_next=1)
    scheduler = _scheduler(engine, catalog, clock, publisher)
    clock.now = _at("2026-03-23 08:00")
    [outcome] = await scheduler.run_due()
    assert outcome.result == "failed"
    clock.advance(minutes=1)
    assert await scheduler.run_due() == []  # the claim is not abandoned yet
    wake = await scheduler.schedules.next_wakeup()
    assert wake is not None and wake <= _at("2026-03-23 08:00") + STALE_CLAIM + timedelta(seconds=1)
    clock.now = wake
    [outcome] = await scheduler.run_due()
    assert outcome.result == "posted-late"
    assert len(publisher.digests) == 1
    assert await scheduler.run_due() == []


async def test_retry_finds_a_message_that_did_go_out(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))
    await _schedule(repo, engine, catalog, clock)
    publisher = FakePublisher(fail_next=1)
    scheduler = _scheduler(engine, catalog, clock, publisher)
    clock.now = _at("2026-03-23 08:00")
    await scheduler.run_due()
    [claim_id] = await scheduler.schedules.abandoned_claims(clock() + STALE_CLAIM * 2)
    publisher.already_posted[claim_id] = 4242  # the message got through although the call failed
    clock.advance(minutes=11)
    [outcome] = await scheduler.run_due()
    assert outcome.result == "posted-late"
    assert publisher.digests == []
    async with engine.connect() as conn:
        assert await conn.scalar(select(DigestPost.message_id)) == 4242


@pytest.mark.postgres
async def test_two_processes_racing_post_each_digest_once(pg_url: str, catalog: PromptCatalog) -> None:
    engines = [make_engine(pg_url), make_engine(pg_url)]
    await upgrade(engines[0])
    repo = Repository(make_sessionmaker(engines[0]))
    clock = FakeClock(_at("2026-03-18 12:00"))
    try:
        await _post(repo, catalog, "alliance")
        await _post(repo, catalog, "defense")
        store = _store(engines[0])
        for kind in ("daily", "weekly"):
            for slug in ("alliance", "defense"):
                cadence = Cadence(kind, 0, time(9), BERLIN)  # type: ignore[arg-type]
                await store.schedules.upsert_schedule(GUILD, slug, 55, cadence, created_by=None, now=clock())
        publishers = [FakePublisher(delay=0.01), FakePublisher(delay=0.01)]
        schedulers = [_scheduler(e, catalog, clock, p) for e, p in zip(engines, publishers, strict=True)]
        posted: list[tuple[str, str, datetime]] = []
        for _ in range(6):  # six days: 12 daily digests and 2 weekly ones
            clock.advance(days=1)
            await asyncio.gather(*(s.run_due() for s in schedulers))
        for publisher in publishers:
            posted += [(c.prompt_slug, c.period.kind, c.period.start) for c, _ in publisher.digests]
        assert len(posted) == len(set(posted)) == 6 * 2 + 2
        async with engines[0].connect() as conn:
            assert await conn.scalar(select(DigestPost.id).where(DigestPost.posted_at.is_(None))) is None
    finally:
        for e in engines:
            await e.dispose()


async def test_each_shard_process_fires_only_the_guilds_it_serves(engine: AsyncEngine, catalog: PromptCatalog) -> None:
    guilds = {0: (10 << 22) + 7, 1: (11 << 22) + 7}  # Discord's routing: (guild_id >> 22) % shard_count
    assert {shard: shard_of(g, 2) for shard, g in guilds.items()} == {0: 0, 1: 1}
    clock = FakeClock(_at("2026-03-18 12:00"))
    store = _store(engine)
    for prompt in catalog:
        await store.prompts.sync_prompt(prompt)
    for guild in guilds.values():
        await store.guilds.ensure_guild(guild, "Sharded guild")
        await store.schedules.upsert_schedule(
            guild, "alliance", 55, Cadence("daily", 0, time(9), BERLIN), created_by=None, now=clock()
        )
    publishers = {shard: FakePublisher() for shard in guilds}
    schedulers = {
        shard: Scheduler(
            store.schedules, store.digests, catalog, publishers[shard], clock=clock, shards=ShardSet.of(2, [shard])
        )
        for shard in guilds
    }
    assert await store.schedules.next_wakeup(shards=ShardSet.of(8, [5])) is None  # a shard without guilds sleeps
    first_due = await store.schedules.next_wakeup(shards=schedulers[0].shards)
    assert first_due == _at("2026-03-19 08:00")  # 09:00 CET
    clock.advance(days=1)
    assert [s.guild_id for s in await store.schedules.due_schedules(clock(), shards=schedulers[1].shards)] == [
        guilds[1]
    ]
    await schedulers[1].run_due()  # shard 1 goes first: it must leave shard 0's guild alone
    assert [c.guild_id for c, _ in publishers[1].digests] == [guilds[1]]
    assert await store.schedules.next_wakeup(shards=schedulers[0].shards) == first_due  # still due for shard 0
    await schedulers[0].run_due()
    assert [c.guild_id for c, _ in publishers[0].digests] == [guilds[0]]
    assert len(publishers[1].digests) == 1


async def test_scheduled_prompt_is_posted_once(repo: Repository, engine: AsyncEngine, catalog: PromptCatalog) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))
    await _post(repo, catalog)
    store = _store(engine)
    info = await store.schedules.add_prompt_schedule(
        GUILD, "defense", 77, _at("2026-03-19 08:00"), tz=BERLIN, created_by=7, now=clock()
    )
    assert await store.schedules.next_wakeup() == _at("2026-03-19 08:00")
    publishers = [FakePublisher(delay=0.01), FakePublisher(delay=0.01)]
    schedulers = [_scheduler(engine, catalog, clock, p) for p in publishers]
    clock.now = _at("2026-03-19 08:00")
    await asyncio.gather(*(s.run_due() for s in schedulers))
    assert [p.id for pub in publishers for p in pub.prompts] == [info.id]
    assert await store.schedules.prompt_schedules(GUILD) == []
    assert await store.schedules.cancel_prompt_schedule(GUILD, info.id) is None


async def test_schedules_upsert_cancel_and_move_with_the_guild_zone(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))
    await _post(repo, catalog)
    store = _store(engine)
    assert await store.guilds.guild_timezone(GUILD) is None
    first = await store.schedules.upsert_schedule(GUILD, "alliance", 55, MONDAY_9, created_by=7, now=clock())
    moved = await store.schedules.upsert_schedule(
        GUILD, "alliance", 56, Cadence("weekly", 4, time(18), BERLIN), created_by=8, now=clock()
    )
    assert moved.id == first.id and moved.channel_id == 56
    assert moved.next_due_at == _at("2026-03-20 17:00")  # Friday 18:00 CET
    [after] = await store.guilds.set_guild_timezone(GUILD, "America/New_York", now=clock())
    assert await store.guilds.guild_timezone(GUILD) == "America/New_York"
    assert after.cadence.tz == "America/New_York"
    assert after.next_due_at == _at("2026-03-20 22:00")  # Friday 18:00 EDT
    assert [s.id for s in await store.schedules.cancel_schedules(GUILD, prompt_slug="alliance")] == [first.id]
    assert await store.schedules.schedules(GUILD) == []
    assert await store.schedules.next_wakeup() is None


def test_period_of_claim_is_the_period_that_just_ended() -> None:
    due = _at("2026-03-30 07:00")
    period = MONDAY_9.last_complete(due)
    assert period == Period("weekly", _at("2026-03-23 08:00"), due, BERLIN)


async def test_the_loop_sleeps_to_the_nearest_row_and_wakes_when_told(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-23 07:59:59.8"))  # 0.2 s before Monday 09:00 in Berlin
    await _schedule(repo, engine, catalog, clock)
    publisher = FakePublisher()
    scheduler = _scheduler(engine, catalog, clock, publisher)
    scheduler.start()
    try:
        await asyncio.sleep(0.05)
        assert publisher.digests == []
        clock.advance(seconds=0.3)  # the loop's own timer (0.5 s at least) fires after this
        for _ in range(40):
            if publisher.digests:
                break
            await asyncio.sleep(0.05)
        assert len(publisher.digests) == 1
        # A prompt post added for "now" is picked up at once when the scheduler is woken.
        await scheduler.schedules.add_prompt_schedule(
            GUILD, "defense", 77, clock(), tz="UTC", created_by=None, now=clock()
        )
        scheduler.wake()
        for _ in range(40):
            if publisher.prompts:
                break
            await asyncio.sleep(0.05)
        assert len(publisher.prompts) == 1
    finally:
        await scheduler.stop()


async def test_forget_user_clears_who_created_schedules(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog
) -> None:
    clock = FakeClock(_at("2026-03-18 12:00"))
    await _schedule(repo, engine, catalog, clock)  # created_by=7
    store = _store(engine)
    await store.schedules.add_prompt_schedule(
        GUILD, "defense", 77, _at("2026-03-20 08:00"), tz="UTC", created_by=7, now=clock()
    )
    assert await store.schedules.forget_user(7) == 2
    assert [s.created_by for s in await store.schedules.schedules(GUILD)] == [None]
    assert [p.created_by for p in await store.schedules.prompt_schedules(GUILD)] == [None]
