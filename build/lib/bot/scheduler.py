"""The scheduler: posts due digests and prompts from database rows, once, even across restarts and processes.

One task sleeps until the nearest due row (``Schedules.next_wakeup``), wakes early when :meth:`Scheduler.wake`
is called (a schedule was added), and caps its sleep so rows added by another process are seen. Each due digest is
claimed in the database before it is posted (see :mod:`bot.storage.schedules`), so a second process, a restart or
a re-run posts nothing twice. A digest that fell due while the bot was down is posted once on start, marked late;
older missed periods are skipped, not posted in a burst. No discord.py here: posting is a :class:`Publisher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.core.digest import Digest
from bot.core.errors import StancebotError
from bot.core.prompts import PromptCatalog
from bot.core.shards import ShardSet
from bot.core.tasks import BackgroundTask
from bot.storage.digests import DigestQueries
from bot.storage.models import utcnow
from bot.storage.schedules import DigestClaim, PromptScheduleInfo, ScheduleInfo, Schedules

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: A digest posted more than this long after its period ended is marked late.
GRACE = timedelta(minutes=5)
#: The longest the scheduler sleeps without looking at the database again.
MAX_SLEEP = 300.0


class Publisher(Protocol):
    """Where the scheduler's work goes (Discord in the bot, a list in tests)."""

    async def publish_digest(self, claim: DigestClaim, digest: Digest) -> int:
        """Post the digest; return the message id."""
        ...

    async def find_digest(self, claim: DigestClaim) -> int | None:
        """A message already posted for this claim (checked before a retry), if any."""
        ...

    async def publish_prompt(self, schedule: PromptScheduleInfo) -> tuple[int, int]:
        """Post a scheduled prompt; return (message id, thread id)."""
        ...


@dataclass(frozen=True)
class Outcome:
    """What one run did with one due item (for logs and tests)."""

    kind: str  # "digest" | "prompt"
    item_id: int
    result: str  # "posted", "posted-late", "already-claimed", "failed" ("none": nothing to do, not reported)
    detail: str = ""


def worker_id() -> str:
    """Who holds a claim: host, process id and a random suffix (unique per scheduler)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Scheduler:
    """Fires digest schedules and prompt schedules stored in the database."""

    def __init__(
        self,
        schedules: Schedules,
        digests: DigestQueries,
        catalog: PromptCatalog,
        publisher: Publisher,
        *,
        clock: Clock = utcnow,
        grace: timedelta = GRACE,
        history: int = 8,
        model_note: Callable[[str, int], str] | None = None,
        ready: Callable[[], Awaitable[object]] | None = None,
        max_sleep: float = MAX_SLEEP,
        shards: ShardSet | None = None,
    ) -> None:
        self.schedules = schedules
        self.digests = digests
        self.catalog = catalog
        self.publisher = publisher
        self.clock = clock
        self.grace = grace
        self.history = history
        self.model_note = model_note or (lambda _prompt, _guild: "")
        self.ready = ready
        self.max_sleep = max_sleep
        #: The guilds this process serves; another shard process does the others' scheduled work.
        self.shards = shards
        self.worker = worker_id()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task = BackgroundTask("stancebot-scheduler", self._loop)

    # -- the loop ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task (idempotent)."""
        self._task.start()

    async def stop(self) -> None:
        """Stop the background task and wait for it."""
        await self._task.stop()

    def wake(self) -> None:
        """Look at the database again now (a schedule was added or moved, or the clock was advanced)."""
        self._wake.set()

    async def _loop(self) -> None:
        if self.ready is not None:
            await self.ready()
        while True:
            self._wake.clear()
            try:
                await self.run_due()
                wake_at = await self.schedules.next_wakeup(shards=self.shards)
            except Exception:  # a background loop logs and goes on
                log.exception("Scheduler run failed; retrying in %.0f s", self.max_sleep)
                wake_at = None
            delay = self.max_sleep
            if wake_at is not None:
                delay = min(self.max_sleep, max((wake_at - self.clock()).total_seconds(), 0.5))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # -- one run ----------------------------------------------------------------------------------------------

    async def run_due(self) -> list[Outcome]:
        """Do everything due at ``clock()``: digests, retries of failed digests, prompt posts."""
        async with self._lock:
            now = self.clock()
            outcomes = []
            for schedule in await self.schedules.due_schedules(now, shards=self.shards):
                outcomes.append(await self._guard("digest", schedule.id, self._fire(schedule, now)))
            for claim_id in await self.schedules.abandoned_claims(now, shards=self.shards):
                outcomes.append(await self._guard("digest", claim_id, self._retry(claim_id, now)))
            if await self.schedules.fail_abandoned_prompt_posts(now, shards=self.shards):
                log.warning("Scheduled prompt posts abandoned by a stopped process were marked failed")
            for prompt_schedule in await self.schedules.due_prompt_schedules(now, shards=self.shards):
                outcomes.append(
                    await self._guard("prompt", prompt_schedule.id, self._post_prompt(prompt_schedule, now))
                )
            return [o for o in outcomes if o.result != "none"]

    @staticmethod
    async def _guard(kind: str, item_id: int, work: Awaitable[Outcome]) -> Outcome:
        """Run one item; an error is logged and reported, and the other items still run."""
        try:
            return await work
        except Exception as exc:
            log.exception("Scheduled %s %s failed", kind, item_id)
            return Outcome(kind, item_id, "failed", str(exc)[:200])

    async def _fire(self, schedule: ScheduleInfo, now: datetime) -> Outcome:
        period = schedule.cadence.last_complete(now)
        late = now - period.end > self.grace
        try:
            if schedule.next_due_at < period.end:
                log.warning(
                    "Digest schedule %s missed periods before %s while the bot was down; posting the latest only",
                    schedule.id,
                    period.start.isoformat(),
                )
            claim = await self.schedules.claim_digest(schedule, period, worker=self.worker, now=now, late=late)
            if claim is None:
                return Outcome("digest", schedule.id, "already-claimed", period.start.isoformat())
            return await self._publish(claim, now, check_existing=False)
        finally:
            await self.schedules.advance_schedule(schedule, now)

    async def _retry(self, claim_id: int, now: datetime) -> Outcome:
        claim = await self.schedules.take_over(claim_id, worker=self.worker, now=now, grace=self.grace)
        if claim is None:
            return Outcome("digest", claim_id, "none")
        log.warning("Retrying digest claim %s (attempt %d)", claim.id, claim.attempts)
        return await self._publish(claim, now, check_existing=True)

    async def _publish(self, claim: DigestClaim, now: datetime, *, check_existing: bool) -> Outcome:
        try:
            message_id = await self.publisher.find_digest(claim) if check_existing else None
            if message_id is None:
                prompt = self.catalog.get(claim.prompt_slug, claim.guild_id)
                digest = await self.digests.build_digest(
                    prompt,
                    claim.guild_id,
                    claim.period,
                    claim.cadence,
                    history=self.history,
                    now=now,
                    late=claim.late,
                    model_note=self.model_note(prompt.id, claim.guild_id),
                )
                message_id = await self.publisher.publish_digest(claim, digest)
        except Exception as exc:  # the claim stays open; it is retried after STALE_CLAIM, up to MAX_ATTEMPTS
            level = logging.WARNING if isinstance(exc, StancebotError) else logging.ERROR
            log.log(
                level,
                "Digest %s (guild %s, prompt %s) could not be posted",
                claim.id,
                claim.guild_id,
                claim.prompt_slug,
                exc_info=not isinstance(exc, StancebotError),
            )
            return Outcome("digest", claim.id, "failed", str(exc)[:200])
        await self.schedules.mark_posted(claim.id, message_id, now=self.clock())
        log.info("Posted digest %s for guild %s prompt %s", claim.id, claim.guild_id, claim.prompt_slug)
        return Outcome("digest", claim.id, "posted-late" if claim.late else "posted", claim.period.start.isoformat())

    async def _post_prompt(self, schedule: PromptScheduleInfo, now: datetime) -> Outcome:
        if not await self.schedules.claim_prompt_schedule(schedule.id, worker=self.worker, now=now):
            return Outcome("prompt", schedule.id, "already-claimed")
        try:
            message_id, thread_id = await self.publisher.publish_prompt(schedule)
        except Exception as exc:
            log.warning("Scheduled prompt %s could not be posted", schedule.id, exc_info=True)
            await self.schedules.finish_prompt_schedule(
                schedule.id, "failed", now=now, error=str(exc) or type(exc).__name__
            )
            return Outcome("prompt", schedule.id, "failed", str(exc)[:200])
        await self.schedules.finish_prompt_schedule(
            schedule.id, "posted", now=self.clock(), message_id=message_id, thread_id=thread_id
        )
        return Outcome("prompt", schedule.id, "posted")
