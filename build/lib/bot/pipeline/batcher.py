"""Grouping concurrent writes into one transaction per batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bot.core.tasks import BackgroundTask

T = TypeVar("T")
R = TypeVar("R")


class WriteBatcher(Generic[T, R]):
    """Groups concurrent :meth:`submit` calls into one call of ``fn`` with a list (one transaction per batch).

    Batches run one after another, in submission order. A batch waits ``max_wait`` seconds for company unless it
    is already full.
    """

    def __init__(
        self, name: str, fn: Callable[[list[T]], Awaitable[list[R]]], *, max_size: int, max_wait: float
    ) -> None:
        self.name = name
        self.fn = fn
        self.max_size = max_size
        self.max_wait = max_wait
        self._pending: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self._task = BackgroundTask(f"pipeline-{name}", self._run)

    def __len__(self) -> int:
        return len(self._pending) + self._running

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._idle.clear()
        self._task.start()
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if 0 < len(self._pending) < self.max_size and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)
            while self._pending:
                await self._flush_one()
            self._idle.set()

    async def _flush_one(self) -> None:
        batch = [self._pending.popleft() for _ in range(min(self.max_size, len(self._pending)))]
        self._running = len(batch)
        try:
            results = await self.fn([item for item, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._running = 0

    async def close(self) -> None:
        """Write what is queued (the batch in progress finishes), then stop."""
        if self._task.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 30)
        await self._task.stop()
        while self._pending:
            await self._flush_one()
