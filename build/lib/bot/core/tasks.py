"""Starting and stopping a background task: one helper for every loop the bot runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTask:
    """A named asyncio task built by ``factory`` on :meth:`start` (idempotent while it runs) and cancelled and
    awaited on :meth:`stop`."""

    def __init__(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.name = name
        self._factory = factory
        self.task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        """Whether the task was started and has not finished."""
        return self.task is not None and not self.task.done()

    def start(self) -> asyncio.Task[Any]:
        """Start the task unless it is running; returns it."""
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._factory(), name=self.name)
        return self.task

    async def stop(self) -> None:
        """Cancel the task and wait until it has stopped."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
