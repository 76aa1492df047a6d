"""Classifying what is pending in the background: replies left pending by a full model queue, a crash, a replayed
spool or a failed classification (retried with backoff), each by one task at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from bot.pipeline.events import PipelineOptions
from bot.storage.records import ReplyRef
from bot.storage.writes import Writes

log = logging.getLogger(__name__)


class Sweeper:
    """Knows which replies are in flight and when a failed one is retried; sweeps pending replies."""

    def __init__(
        self,
        writes: Writes,
        classify: Callable[[ReplyRef], Coroutine[Any, Any, None]],
        *,
        options: PipelineOptions,
        owns_guild: Callable[[int], bool],
        request: Callable[[], None],
    ) -> None:
        self.writes = writes
        self._classify = classify
        self.options = options
        #: Whether this process handles a guild's replies (sharding: each process sweeps only its own guilds).
        self.owns_guild = owns_guild
        self._request = request
        self.inflight: Counter[int] = Counter()
        self._attempts: dict[int, int] = {}
        self._retry_at: dict[int, float] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self.sweeping = False

    def hold(self, reply_id: int) -> None:
        """A reply is being classified (a sweep leaves it alone)."""
        self.inflight[reply_id] += 1

    def release(self, reply_id: int) -> None:
        """A reply is no longer being classified."""
        self.inflight[reply_id] -= 1
        if self.inflight[reply_id] <= 0:
            del self.inflight[reply_id]

    def succeeded(self, reply_id: int) -> None:
        """A reply's stance was saved: forget its failures."""
        self._attempts.pop(reply_id, None)
        self._retry_at.pop(reply_id, None)

    def give_up(self, reply: ReplyRef) -> bool:
        """Count a failed classification; ``True`` once it failed ``max_attempts`` times (store it as failed),
        else schedule a retry with backoff."""
        attempts = self._attempts.get(reply.id, 0) + 1
        self._attempts[reply.id] = attempts
        if attempts >= self.options.max_attempts:
            log.error("Reply %s failed classification %d times; stored as unclear", reply.message_id, attempts)
            return True
        delay = min(self.options.retry_initial_s * 2**attempts, self.options.retry_max_s)
        self._retry_at[reply.id] = time.monotonic() + delay
        self._timers.add(asyncio.get_running_loop().call_later(delay, self._request))
        return False

    async def sweep(self) -> None:
        """Classify every pending reply that nobody is classifying (oldest first, bounded concurrency)."""
        self.sweeping = True
        limit = asyncio.Semaphore(self.options.sweep_concurrency)
        tasks: set[asyncio.Task[None]] = set()
        swept = 0
        seen: set[int] = set()
        try:
            cursor = 0
            while batch := await self.writes.pending_after(cursor, limit=256):
                cursor = batch[-1].id
                now = time.monotonic()
                for reply in batch:
                    seen.add(reply.id)
                    if reply.id in self.inflight or not self.owns_guild(reply.guild_id):
                        continue
                    if self._retry_at.get(reply.id, 0) > now:
                        continue
                    self._retry_at.pop(reply.id, None)
                    await limit.acquire()
                    self.hold(reply.id)  # before the task starts: the next page must not take it again
                    task = asyncio.create_task(self._classify(reply))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _task: limit.release())
                    swept += 1
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self.sweeping = False
        for gone in (self._attempts.keys() | self._retry_at.keys()) - seen:  # classified, deleted or relabelled
            self.succeeded(gone)
        if swept:
            log.info("Classified %d pending replies in the background", swept)

    def close(self) -> None:
        """Cancel the retry timers."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
