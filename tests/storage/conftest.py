"""Storage test helpers: a fake clock and publisher, a posted prompt, replies at set times, the scheduler."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from itertools import count

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.digest import Digest
from bot.core.periods import Cadence
from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceResult
from bot.scheduler import Scheduler
from bot.storage.db import make_sessionmaker
from bot.storage.records import PostInfo
from bot.storage.repository import Repository
from bot.storage.schedules import DigestClaim, PromptScheduleInfo
from tests.conftest import add_reply, save_stance

GUILD = 1001
BERLIN = "Europe/Berlin"
# Monday 09:00 in Berlin, weekly. 2026-03-29 is the night clocks go forward (CET -> CEST).
MONDAY_9 = Cadence("weekly", 0, time(9, 0), BERLIN)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class FakePublisher:
    """Records what the scheduler would post; can fail or be slow on demand."""

    digests: list[tuple[DigestClaim, Digest]] = field(default_factory=list)
    prompts: list[PromptScheduleInfo] = field(default_factory=list)
    fail_next: int = 0
    delay: float = 0.0
    already_posted: dict[int, int] = field(default_factory=dict)
    ids: count[int] = field(default_factory=lambda: count(9000))

    async def publish_digest(self, claim: DigestClaim, digest: Digest) -> int:
        await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("Discord said 503")
        self.digests.append((claim, digest))
        return next(self.ids)

    async def find_digest(self, claim: DigestClaim) -> int | None:
        return self.already_posted.get(claim.id)

    async def publish_prompt(self, schedule: PromptScheduleInfo) -> tuple[int, int]:
        await asyncio.sleep(self.delay)
        self.prompts.append(schedule)
        return next(self.ids), next(self.ids)


async def _post(repo: Repository, catalog: PromptCatalog, slug: str = "alliance") -> PostInfo:
    await repo.guilds.ensure_guild(GUILD, "Test guild")
    for prompt in catalog:
        await repo.prompts.sync_prompt(prompt)
    number = {"alliance": 1, "defense": 2}[slug]
    return await repo.prompts.record_post(
        slug, guild_id=GUILD, channel_id=10, message_id=20 + number, thread_id=30 + number, posted_by=None
    )


_message_ids = count(100_000)


async def _say(
    repo: Repository, post: PostInfo, author: int, when: datetime, label: str, confidence: float = 0.9, text: str = ""
) -> int:
    message_id = next(_message_ids)
    reply = await add_reply(
        repo, post, message_id=message_id, author_id=author, content=text or f"{label} says {author}", created_at=when
    )
    assert reply is not None
    await save_stance(repo, reply, StanceResult(label, confidence), model_version="test")
    return message_id


def _store(engine: AsyncEngine) -> Repository:
    return Repository(make_sessionmaker(engine))


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def _schedule(
    repo: Repository, engine: AsyncEngine, catalog: PromptCatalog, clock: FakeClock, cadence: Cadence = MONDAY_9
) -> int:
    await _post(repo, catalog)
    info = await _store(engine).schedules.upsert_schedule(GUILD, "alliance", 55, cadence, created_by=7, now=clock())
    return info.id


def _scheduler(engine: AsyncEngine, catalog: PromptCatalog, clock: FakeClock, publisher: FakePublisher) -> Scheduler:
    store = _store(engine)
    return Scheduler(store.schedules, store.digests, catalog, publisher, clock=clock)
