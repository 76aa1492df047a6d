"""Runs stance models off the event loop: replies are queued and classified in micro-batches in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bot.core.prompts import Prompt, PromptCatalog
from bot.core.stance import StanceClassifier, StanceResult

log = logging.getLogger(__name__)


@dataclass
class _Job:
    prompt_id: str
    text: str
    future: asyncio.Future[StanceResult]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher has done, for metrics and benchmarks."""

    batches: int = 0
    items: int = 0
    last_batch_size: int = 0
    last_latency_s: float = 0.0


class StanceService:
    """Classifies replies for any prompt in a catalog.

    :meth:`classify` queues one reply and awaits its result; a background task gathers up to ``batch_size`` replies
    (waiting at most ``max_wait_ms`` after the first) and runs them in one worker thread, so the event loop never
    waits on the model. The queue is bounded: when it is full, :meth:`classify` waits (back-pressure).
    """

    def __init__(
        self,
        catalog: PromptCatalog,
        factory: Callable[[Prompt], StanceClassifier],
        *,
        batch_size: int = 32,
        max_wait_ms: int = 50,
        max_queue: int = 10_000,
    ) -> None:
        self.catalog = catalog
        self._factory = factory
        self._models: dict[str, StanceClassifier] = {}
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stance")
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatchStats()

    def model(self, prompt_id: str) -> StanceClassifier:
        """The classifier for a prompt, built on first use (call from the worker thread or at start-up)."""
        if prompt_id not in self._models:
            self._models[prompt_id] = self._factory(self.catalog.get(prompt_id))
        return self._models[prompt_id]

    def forget_model(self, prompt_id: str) -> None:
        """Drop a cached classifier (after the prompt or its trained model changed)."""
        self._models.pop(prompt_id, None)

    async def warm_up(self, prompt_ids: list[str] | None = None) -> None:
        """Build classifiers ahead of the first reply, in the worker thread."""
        loop = asyncio.get_running_loop()
        for pid in prompt_ids if prompt_ids is not None else self.catalog.ids():
            await loop.run_in_executor(self._executor, self.model, pid)

    def _classify_sync(self, prompt_id: str, texts: list[str]) -> list[StanceResult]:
        return self.model(prompt_id).classify(texts)

    @property
    def queue_depth(self) -> int:
        """Replies waiting to be classified."""
        return self._queue.qsize()

    async def classify(self, prompt_id: str, text: str) -> StanceResult:
        """Classify one reply (micro-batched with others)."""
        self.catalog.get(prompt_id)  # unknown prompts fail here, not in the worker
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="stance-batcher")
        future: asyncio.Future[StanceResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(prompt_id, text, future))
        return await future

    async def classify_many(self, prompt_id: str, texts: list[str]) -> list[StanceResult]:
        """Classify a list of replies as one batch in the worker thread (offline analysis, evaluation)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._classify_sync, prompt_id, texts)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            jobs = [first]
            deadline = loop.time() + self.max_wait
            while len(jobs) < self.batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    jobs.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            await self._process(jobs)

    async def _process(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[str, list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[job.prompt_id].append(job)
        started = time.perf_counter()
        for prompt_id, group in groups.items():
            texts = [j.text for j in group]
            try:
                results = await loop.run_in_executor(self._executor, self._classify_sync, prompt_id, texts)
            except Exception as exc:  # a model failure fails these replies, never the batcher
                log.exception("Classification of %d replies for prompt %s failed", len(group), prompt_id)
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, result in zip(group, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        self.stats.batches += 1
        self.stats.items += len(jobs)
        self.stats.last_batch_size = len(jobs)
        self.stats.last_latency_s = time.perf_counter() - started

    async def close(self) -> None:
        """Stop the batcher and the worker thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)
