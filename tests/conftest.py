"""Shared fixtures: the real encoder (offline), real SQLite files and real PostgreSQL databases."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.assets import prompts_dir
from bot.core.encoder import SentenceEncoder
from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.db import make_engine, make_sessionmaker, sqlite_url, upgrade
from bot.storage.records import NewReply, PostInfo, ReplyRef, StanceWrite
from bot.storage.repository import Repository

PG_DSN = os.environ.get("STANCEBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
WANT_PG = os.environ.get("STANCEBOT_TEST_POSTGRES", "1") != "0"


@pytest.fixture(scope="session")
def encoder() -> SentenceEncoder:
    """The packaged all-MiniLM-L6-v2, loaded once per test session, offline."""
    return SentenceEncoder()


@pytest.fixture(scope="session")
def catalog() -> PromptCatalog:
    """The seed prompts shipped in models/prompts."""
    return PromptCatalog.from_dir(prompts_dir())


async def _pg_database() -> str:
    """Create a throwaway database on the shared PostgreSQL server; returns its asyncpg URL."""
    name = f"stancebot_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL at {PG_DSN} is not reachable ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, "
            "or set STANCEBOT_TEST_POSTGRES=0 to leave the PostgreSQL variants out."
        )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_DSN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"


async def _drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A throwaway database on the local PostgreSQL server (dropped afterwards); skipped on request only."""
    if not WANT_PG:
        pytest.skip("STANCEBOT_TEST_POSTGRES=0: PostgreSQL variant left out on request")
    url = await _pg_database()
    try:
        yield url
    finally:
        await _drop_pg_database(url)


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database URL: a SQLite file, or a fresh database on the local PostgreSQL server."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "stancebot.db")
        return
    async with pg_database() as url:
        yield url


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh database on the local PostgreSQL server, for tests that need several processes on one database."""
    async with pg_database() as url:
        yield url


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated (``alembic upgrade head``) database."""
    eng = make_engine(db_url)
    await upgrade(eng)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def repo(engine: AsyncEngine) -> Repository:
    """The repository over the migrated database."""
    return Repository(make_sessionmaker(engine))


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Iterator[Path]:
    """A path for a SQLite file."""
    return tmp_path / "bot.db"


async def add_reply(
    repo: Repository, post: PostInfo, *, message_id: int, author_id: int, content: str, created_at: datetime
) -> ReplyRef | None:
    """Store one reply: the write path with a batch of one."""
    [ref] = await repo.writes.add_replies([NewReply(post, message_id, author_id, content, created_at)])
    return ref


async def save_stance(repo: Repository, reply: ReplyRef, result: StanceResult, *, model_version: str) -> None:
    """Save one model stance for a stored reply: the write path with a batch of one."""
    await repo.writes.save_stances([StanceWrite(reply, result, model_version)])
