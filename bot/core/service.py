"""Runs stance models off the event loop: replies are queued and classified in micro-batches in a worker thread."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bot.core.errors import UnknownPromptError
from bot.core.prompts import Owner, Prompt, PromptCatalog
from bot.core.stance import StanceClassifier, StanceResult
from bot.core.tasks import BackgroundTask

log = logging.getLogger(__name__)

#: Called after every batch with (batch size, seconds the model took).
BatchHook = Callable[[int, float], None]


#: A classifier's key: the prompt's owner (``None`` for a seed prompt, shared by every guild) and its id.
ModelKey = tuple[Owner, str]


@dataclass
class _Job:
    key: ModelKey
    text: str
    future: asyncio.Future[StanceResult]
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher has done, for metrics and benchmarks."""

    batches: int = 0
    items: int = 0
    failures: int = 0
    last_batch_size: int = 0
    last_latency_s: float = 0.0
    max_batch_size: int = 0


class StanceService:
    """Classifies replies for any prompt in a catalog, per guild: a guild's own prompt has its own classifier, a
    seed prompt's classifier is shared by every guild.

    :meth:`submit` queues one reply and returns a future of its result; a background task gathers up to
    ``batch_size`` replies (waiting at most ``max_wait_ms`` after the first) and runs them in one worker thread, so
    the event loop never waits on the model. The queue holds at most ``max_queue`` replies: when it is full,
    ``submit(wait=False)`` returns ``None`` (the caller keeps the reply elsewhere, e.g. pending in the database)
    and ``submit(wait=True)`` waits for room (back-pressure).

    When a backlog builds up (a burst, a restart with pending replies), a batch takes whatever is already queued, up
    to ``backlog_window`` replies, and the encoder sorts them by length into batches of ``batch_size``: far less
    padding than batches cut in arrival order (about 1.8x the throughput on our replies). Without a backlog nothing
    changes: a batch holds at most ``batch_size`` replies, gathered within ``max_wait_ms``.
    """

    def __init__(
        self,
        catalog: PromptCatalog,
        factory: Callable[[Prompt], StanceClassifier],
        *,
        batch_size: int = 32,
        max_wait_ms: int = 50,
        max_queue: int = 2000,
        backlog_window: int = 256,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.catalog = catalog
        self._factory = factory
        self._models: dict[ModelKey, StanceClassifier] = {}
        self.batch_size = batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.backlog_window = max(batch_size, backlog_window)
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stance")
        self._worker = BackgroundTask("stance-batcher", self._run)
        self._busy = 0
        self.stats = BatchStats()

    def key(self, prompt_id: str, guild_id: Owner = None) -> ModelKey:
        """The classifier key of ``prompt_id`` as ``guild_id`` sees it (raises for a prompt it cannot use)."""
        return self.catalog.owner(prompt_id, guild_id), prompt_id

    def model(self, prompt_id: str, guild_id: Owner = None) -> StanceClassifier:
        """The classifier for a prompt, built on first use (call from the worker thread or at start-up)."""
        return self._model(self.key(prompt_id, guild_id))

    def _model(self, key: ModelKey) -> StanceClassifier:
        if key not in self._models:
            owner, prompt_id = key
            self._models[key] = self._factory(self.catalog.get(prompt_id, owner))
        return self._models[key]

    def version(self, prompt_id: str, guild_id: Owner = None) -> str:
        """The version of the prompt's classifier if it is built, else ``"unknown"`` (never builds one)."""
        try:
            model = self._models.get(self.key(prompt_id, guild_id))
        except UnknownPromptError:
            return "unknown"
        return model.version if model is not None else "unknown"

    def install(self, prompt_id: str, guild_id: Owner, model: StanceClassifier) -> None:
        """Serve ``model`` for a prompt from the next batch on (a head learned from the server's labels). A batch
        already running finishes on the model it started with; each result carries the version that gave it."""
        self._models[self.key(prompt_id, guild_id)] = model

    async def served(self, prompt_id: str, guild_id: Owner = None) -> StanceClassifier:
        """The classifier serving a prompt now, built in the worker thread if it is not built yet."""
        key = self.key(prompt_id, guild_id)
        model = self._models.get(key)
        if model is None:
            model = await asyncio.get_running_loop().run_in_executor(self._executor, self._model, key)
        return model

    def forget_model(self, prompt_id: str, guild_id: Owner = None) -> None:
        """Drop a cached classifier (after the prompt or its trained model changed)."""
        self._models.pop((guild_id, prompt_id), None)

    async def warm_up(self, prompt_ids: list[str] | None = None, *, guild_id: Owner = None) -> None:
        """Build classifiers ahead of the first reply, in the worker thread (the seed prompts by default)."""
        loop = asyncio.get_running_loop()
        for pid in prompt_ids if prompt_ids is not None else self.catalog.ids():
            await loop.run_in_executor(self._executor, self._model, self.key(pid, guild_id))

    def _classify_sync(self, key: ModelKey, texts: list[str]) -> list[StanceResult]:
        model = self._model(key)
        version = model.version
        return [r if r.model_version else r._replace(model_version=version) for r in model.classify(texts)]

    @property
    def queue_depth(self) -> int:
        """Replies waiting to be classified (queued, not yet in a batch)."""
        return self._queue.qsize()

    @property
    def in_flight(self) -> int:
        """Replies queued or being classified right now."""
        return self._queue.qsize() + self._busy

    @property
    def has_room(self) -> bool:
        """Whether :meth:`submit` with ``wait=False`` would accept a reply now."""
        return not self._queue.full()

    async def submit(
        self, prompt_id: str, text: str, *, guild_id: Owner = None, wait: bool = True
    ) -> asyncio.Future[StanceResult] | None:
        """Queue one reply to ``prompt_id`` as ``guild_id`` sees it; its result arrives on the returned future.
        ``None`` when the queue is full and ``wait`` is false; with ``wait`` it waits for room instead."""
        key = self.key(prompt_id, guild_id)  # unknown prompts fail here, not in the worker
        self._worker.start()
        future: asyncio.Future[StanceResult] = asyncio.get_running_loop().create_future()
        job = _Job(key, text, future)
        if wait:
            await self._queue.put(job)
        else:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                return None
        return future

    async def classify(self, prompt_id: str, text: str, *, guild_id: Owner = None) -> StanceResult:
        """Classify one reply (micro-batched with others); waits for room when the queue is full."""
        future = await self.submit(prompt_id, text, guild_id=guild_id, wait=True)
        assert future is not None
        return await future

    async def classify_many(self, prompt_id: str, texts: list[str], *, guild_id: Owner = None) -> list[StanceResult]:
        """Classify a list of replies as one batch in the worker thread (offline analysis, evaluation)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._classify_sync, self.key(prompt_id, guild_id), texts)

    async def _next_batch(self) -> list[_Job]:
        """The next batch: whatever is queued (up to ``batch_size``), waiting at most ``max_wait`` for more; under a
        backlog, everything already queued up to ``backlog_window`` (no waiting)."""
        loop = asyncio.get_running_loop()
        jobs = [await self._queue.get()]
        if self._queue.qsize() >= self.batch_size:
            while len(jobs) < self.backlog_window and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            return jobs
        deadline = loop.time() + self.max_wait
        while len(jobs) < self.batch_size:
            try:
                jobs.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                break
        return jobs

    async def _run(self) -> None:
        while True:
            jobs = await self._next_batch()
            self._busy = len(jobs)
            try:
                await self._process(jobs)
            finally:
                self._busy = 0

    async def _process(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[ModelKey, list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[job.key].append(job)
        started = time.perf_counter()
        for key, group in groups.items():
            prompt_id = key[1]
            texts = [j.text for j in group]
            try:
                results = await loop.run_in_executor(self._executor, self._classify_sync, key, texts)
            except Exception:  # a model failure fails replies, never the batcher
                if len(group) > 1:
                    log.warning(
                        "A batch of %d replies for prompt %s failed; classifying them one by one", len(group), prompt_id
                    )
                    await self._one_by_one(key, group)
                    continue
                log.exception("Classification of reply for prompt %s failed", prompt_id)
                self._fail(group[0], sys.exc_info()[1])
                continue
            for job, result in zip(group, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.items += len(jobs)
        self.stats.last_batch_size = len(jobs)
        self.stats.max_batch_size = max(self.stats.max_batch_size, len(jobs))
        self.stats.last_latency_s = elapsed
        if self.on_batch is not None:
            try:
                self.on_batch(len(jobs), elapsed)
            except Exception:  # metrics never break classification
                log.exception("Batch hook failed")

    async def _one_by_one(self, key: ModelKey, group: list[_Job]) -> None:
        """After a batch failed: each reply alone, so one that breaks the model fails only itself."""
        loop = asyncio.get_running_loop()
        for job in group:
            try:
                [result] = await loop.run_in_executor(self._executor, self._classify_sync, key, [job.text])
            except Exception as exc:
                log.exception("Classification of a reply for prompt %s failed", key[1])
                self._fail(job, exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)

    def _fail(self, job: _Job, exc: BaseException | None) -> None:
        self.stats.failures += 1
        if not job.future.done():
            job.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("classification failed"))

    async def close(self) -> None:
        """Stop the batcher and the worker thread; replies still queued fail with ``CancelledError``."""
        await self._worker.stop()
        while not self._queue.empty():
            job = self._queue.get_nowait()
            job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
