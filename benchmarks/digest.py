"""Benchmark: build a weekly digest over 1,000,000 stored stances, on SQLite and on PostgreSQL.

    .venv/bin/python benchmarks/digest.py [--stances 1000000] [--backends sqlite,postgresql]

Fills a fresh database (migrated with Alembic) through the drivers' bulk paths (``executemany`` on SQLite, ``COPY``
on PostgreSQL) with one prompt in one guild: 1,000,000 stances on about 910,000 replies (one in ten replies was
reclassified, so it has an older stance that is no longer current) from 20,000 members over 52 weeks. Which stances
count follows the tally's member rule. Then it times ``DigestQueries.build_digest`` for the last complete week with
an 8-week trend (what the scheduler does), cold and warm, and prints the figures. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import perf_counter, process_time
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.assets import prompts_dir
from bot.core.periods import Cadence
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.storage.db import make_engine, make_sessionmaker, sqlite_url, upgrade
from bot.storage.records import PostInfo
from bot.storage.repository import Repository

GUILD = 424242
PG_DSN = os.environ.get("STANCEBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REPLY_COLUMNS = [
    *("id", "message_id", "post_id", "prompt_id", "guild_id", "channel_id", "author_id", "content", "created_at"),
    *("edited_at", "deleted_at", "status"),
]
STANCE_COLUMNS = [
    *("id", "reply_id", "prompt_id", "guild_id", "author_id", "label", "confidence", "model_version", "reason"),
    *("source", "is_current", "counted", "created_at"),
]
TEXTS = {
    "unfair": "Japan should pay way more, we protect them for free",
    "fair": "Japan already pays billions for the bases, it's fair",
    "mutual_benefit": "Both countries gain, the bases keep Asia stable",
    UNCLEAR: "anyone tried the new Toyota hybrid?",
}


def generate(
    stances: int, members: int, weeks: int, end: datetime, post: PostInfo, seed: int = 1
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Replies and stances as tuples in column order; ``counted`` set by the member rule."""
    rng = random.Random(seed)
    replies_n = -(-stances * 10 // 11)  # with one older stance per ten replies, at least `stances` in all
    span = timedelta(weeks=weeks).total_seconds()
    start = end - timedelta(weeks=weeks)
    labels = list(TEXTS)
    replies: list[tuple[Any, ...]] = []
    current: list[tuple[int, int, str, datetime, float]] = []  # (reply id, author, label, created, confidence)
    offsets = sorted(rng.random() * span for _ in range(replies_n))
    for i, offset in enumerate(offsets, start=1):
        created = start + timedelta(seconds=offset)
        drift = offset / span
        label = rng.choices(labels, weights=(1 + drift, 1.5 - drift, 1.0, 0.4))[0]
        author = 10_000 + rng.randrange(members)
        head = (i, 10**15 + i, post.id, post.prompt_row_id, GUILD, post.thread_id, author, TEXTS[label], created)
        replies.append((*head, None, None, "classified"))
        current.append((i, author, label, created, round(rng.uniform(0.3, 0.99), 4)))
    # member rule: each member's latest reply that takes a stance, else their latest one
    chosen: dict[int, tuple[bool, datetime, int]] = {}
    for reply_id, author, label, created, _ in current:
        key = (label != UNCLEAR, created, reply_id)
        if author not in chosen or key > chosen[author]:
            chosen[author] = key
    counted_ids = {key[2] for key in chosen.values()}
    rows: list[tuple[Any, ...]] = []
    sid = 0
    for reply_id, author, label, created, confidence in current:
        if reply_id % 10 == 0:  # an older stance, replaced when the reply was reclassified
            sid += 1
            rows.append(_stance(sid, reply_id, post, author, UNCLEAR, 0.4, created, current=False, counted=False))
        sid += 1
        rows.append(_stance(sid, reply_id, post, author, label, confidence, created, True, reply_id in counted_ids))
    return replies, rows[:stances]


def _stance(
    sid: int,
    reply_id: int,
    post: PostInfo,
    author: int,
    label: str,
    confidence: float,
    created: datetime,
    current: bool,
    counted: bool,
) -> tuple[Any, ...]:
    head = (sid, reply_id, post.prompt_row_id, GUILD, author, label, confidence, "bench", None, "model")
    return (*head, current, counted, created)


async def _setup(engine: AsyncEngine) -> tuple[Repository, PostInfo]:
    await upgrade(engine)
    repo = Repository(make_sessionmaker(engine))
    catalog = PromptCatalog.from_dir(prompts_dir())
    await repo.guilds.ensure_guild(GUILD, "bench")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    post = await repo.prompts.record_post(
        "alliance", guild_id=GUILD, channel_id=1, message_id=2, thread_id=3, posted_by=None
    )
    return repo, post


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    return value


async def load_sqlite(engine: AsyncEngine, replies: list[tuple[Any, ...]], stances: list[tuple[Any, ...]]) -> None:
    """``executemany`` through the driver connection, one transaction per table."""
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        for table, columns, rows in (("replies", REPLY_COLUMNS, replies), ("stances", STANCE_COLUMNS, stances)):
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608
            await raw.executemany(sql, [tuple(_sqlite_value(v) for v in row) for row in rows])
            await raw.commit()
        await raw.execute("ANALYZE")
        await raw.commit()


async def load_postgres(engine: AsyncEngine, replies: list[tuple[Any, ...]], stances: list[tuple[Any, ...]]) -> None:
    """``COPY`` through asyncpg, then ``VACUUM ANALYZE`` (index-only scans need the visibility map)."""
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.copy_records_to_table("replies", records=replies, columns=REPLY_COLUMNS)
        await raw.copy_records_to_table("stances", records=stances, columns=STANCE_COLUMNS)
        for sql in (
            "SELECT setval(pg_get_serial_sequence('replies', 'id'), (SELECT max(id) FROM replies))",
            "SELECT setval(pg_get_serial_sequence('stances', 'id'), (SELECT max(id) FROM stances))",
        ):
            await raw.execute(sql)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE replies"))
        await conn.execute(text("VACUUM ANALYZE stances"))


async def bench(backend: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill, then time the digest; returns the figures."""
    engine = make_engine(url)
    try:
        repo, post = await _setup(engine)
        end = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # a Monday 09:00 in Berlin
        t0 = perf_counter()
        replies, stances = generate(args.stances, args.members, args.weeks, end, post)
        generated = perf_counter() - t0
        t0 = perf_counter()
        await (load_sqlite if backend == "sqlite" else load_postgres)(engine, replies, stances)
        loaded = perf_counter() - t0
        store = repo
        prompt = PromptCatalog.from_dir(prompts_dir()).get("alliance")
        cadence = Cadence("weekly", 0, time(9), "Europe/Berlin")
        period = cadence.last_complete(end)
        times, cpu = [], []
        digest = None
        for _ in range(args.repeat + 1):
            t0, c0 = perf_counter(), process_time()
            digest = await store.digests.build_digest(prompt, GUILD, period, cadence, history=8, now=end)
            times.append(perf_counter() - t0)
            cpu.append(process_time() - c0)
        assert digest is not None
        return {
            "backend": backend,
            "stances": len(stances),
            "replies": len(replies),
            "generate_s": generated,
            "load_s": loaded,
            "cold_s": times[0],
            "warm_median_s": statistics.median(times[1:]),
            "warm_max_s": max(times[1:]),
            "warm_cpu_s": statistics.median(cpu[1:]),
            "week_replies": digest.current.replies,
            "week_members": digest.current.members,
            "trend_replies": sum(f.replies for f in digest.history),
            "overall_counted": digest.overall_total,
        }
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stances", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    results = []
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results.append(await bench("sqlite", sqlite_url(Path(tmp) / "bench.db"), args))
        else:
            name = f"stancebot_bench_{uuid.uuid4().hex[:8]}"
            admin = await asyncpg.connect(PG_DSN)
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                url = PG_DSN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
                results.append(await bench("postgresql", url, args))
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await admin.close()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\nDigest of the last complete week with an 8-week trend, over {args.stances:,} stances "
        f"({args.members:,} members, {args.weeks} weeks); {os.cpu_count()} CPUs, load average {load}\n"
    )
    print(
        f"{'backend':<11} {'stances':>9} {'load s':>7} {'cold s':>7} {'warm s':>7} {'max s':>6} {'cpu s':>6}  figures"
    )
    for r in results:
        print(
            f"{r['backend']:<11} {r['stances']:>9,} {r['load_s']:>7.1f} {r['cold_s']:>7.3f} {r['warm_median_s']:>7.3f} "
            f"{r['warm_max_s']:>6.3f} {r['warm_cpu_s']:>6.3f}  week: {r['week_replies']:,} replies from "
            f"{r['week_members']:,} members; trend: {r['trend_replies']:,} replies; "
            f"overall {r['overall_counted']:,} counted"
        )
    print("\n(warm: median of the repeats; cpu: this process's CPU time, which includes SQLite's work but not")
    print(" PostgreSQL's; on a busy machine wall time exceeds it)")


if __name__ == "__main__":
    asyncio.run(main())
