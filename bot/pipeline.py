"""What happens to a reply: store it, classify it off the event loop, store its stance. No discord.py here.

The guarantees, and how they are kept:

* **Stored before classified.** A reply is inserted as ``pending`` (batched: one transaction per batch, see
  :class:`bot.storage.writes.Writes`), then queued for the model (:class:`bot.core.service.StanceService`),
  then its stance is saved (batched too). A crash anywhere leaves it ``pending``, and every start classifies what
  is pending (:meth:`ReplyPipeline.resume`).
* **Bounded memory.** The model's queue is bounded. When it is full a new reply is not held in memory: it stays
  ``pending`` in the database and a background *sweep* classifies pending replies as the queue drains.
* **Exactly once.** Replies are unique by message id; a stance is saved only while its reply is still ``pending``
  with the text that was classified, so duplicate events, retries and sweeps never count a reply twice.
* **Database outages lose nothing.** When a write fails the pipeline switches to the :class:`bot.durability.Spool`
  (an fsynced, bounded on-disk buffer) until the database answers again; a background task retries with
  exponential backoff, replays the spool in order and classifies what it stored. If the spool itself is full,
  the threads whose replies could not be kept are handed to :attr:`ReplyPipeline.on_missed` (catch-up from
  channel history) once the database is back.
* **Failed classifications are retried** with backoff; after ``max_attempts`` the reply is stored as ``unclear``
  with the reason, so one poisonous reply cannot loop forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from bot.config import Settings
from bot.core.errors import StorageError, UnknownPromptError
from bot.core.prompts import UNCLEAR
from bot.core.service import StanceService
from bot.core.shards import ShardSet
from bot.core.stance import StanceResult
from bot.durability import Record, Spool
from bot.storage.records import NewReply, PostInfo, ReplyRef, StanceWrite
from bot.storage.repository import Repository
from bot.storage.writes import Writes

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: The stance a reply gets when the model failed on it ``max_attempts`` times.
FAILED = StanceResult(UNCLEAR, 0.0, "classification failed")


class ReplyBufferedError(StorageError):
    """The database is down: the reply was kept on disk and will be stored and counted when it is back."""

    def __init__(self) -> None:
        super().__init__("The database is unavailable right now; your reply is kept and counted when it is back.")


@dataclass(frozen=True)
class ReplyOutcome:
    """A classified reply, for listeners (reactions, the sandbox printout, metrics)."""

    reply: ReplyRef
    result: StanceResult
    model_version: str
    edited: bool = False


class PipelineObserver(Protocol):
    """What the pipeline reports (metrics implement this; see :mod:`bot.metrics`)."""

    def reply_received(self) -> None:
        """A new reply reached the pipeline."""

    def replies_stored(self, count: int) -> None:
        """Replies were written to the database (live, from the spool or from history)."""

    def reply_duplicate(self) -> None:
        """A reply was already stored (duplicate event) or not stored (opt-out)."""

    def stance_committed(self, outcome: ReplyOutcome, latency_s: float | None) -> None:
        """A model stance was committed; ``latency_s`` from the reply's arrival, when it arrived live."""

    def database_error(self, operation: str) -> None:
        """A database operation failed."""

    def write_batch(self, operation: str, size: int, seconds: float) -> None:
        """A batch of ``size`` writes (``insert`` replies, ``save`` stances) took ``seconds``."""

    def writes_spooled(self, count: int) -> None:
        """Writes went to the on-disk spool (database down)."""

    def writes_dropped(self, count: int) -> None:
        """Writes could not be kept (spool full); their threads are caught up from history later."""

    def replies_caught_up(self, count: int) -> None:
        """Replies found in channel history were stored."""


class NullObserver:
    """Reports nowhere."""

    def reply_received(self) -> None:
        """Ignore."""

    def replies_stored(self, count: int) -> None:
        """Ignore."""

    def reply_duplicate(self) -> None:
        """Ignore."""

    def stance_committed(self, outcome: ReplyOutcome, latency_s: float | None) -> None:
        """Ignore."""

    def database_error(self, operation: str) -> None:
        """Ignore."""

    def write_batch(self, operation: str, size: int, seconds: float) -> None:
        """Ignore."""

    def writes_spooled(self, count: int) -> None:
        """Ignore."""

    def writes_dropped(self, count: int) -> None:
        """Ignore."""

    def replies_caught_up(self, count: int) -> None:
        """Ignore."""


@dataclass(frozen=True)
class PipelineOptions:
    """Tuning knobs (``[pipeline]`` in the settings)."""

    write_batch_size: int = 200
    write_max_wait_ms: float = 5.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    max_attempts: int = 5
    sweep_interval_s: float = 60.0
    sweep_concurrency: int = 256


class _Outcome:
    """Why a reply has no stored row yet."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SPOOLED = _Outcome("SPOOLED")
DROPPED = _Outcome("DROPPED")
Stored = ReplyRef | None | _Outcome


class _WriteBatcher(Generic[T, R]):
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
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending) + self._running

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._idle.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"pipeline-{self.name}")
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
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 30)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:
            await self._flush_one()


class ReplyPipeline:
    """Stores replies before classifying them; see the module docstring for the guarantees."""

    def __init__(
        self,
        repo: Repository,
        service: StanceService,
        *,
        store: Writes | None = None,
        spool: Spool | None = None,
        options: PipelineOptions | None = None,
        observer: PipelineObserver | None = None,
        owns_guild: Callable[[int], bool] | None = None,
    ) -> None:
        self.repo = repo
        self.service = service
        self.store = store or repo.writes
        self.spool = spool
        self.options = options or PipelineOptions()
        self.observer: PipelineObserver = observer or NullObserver()
        #: Whether this process handles a guild's replies (sharding: each process sweeps only its own guilds).
        self.owns_guild = owns_guild or (lambda _guild_id: True)
        #: Receives outcomes nobody awaits (sweeps, replays): e.g. ``bot.dispatch("stance_recorded", outcome)``.
        self.notify: Callable[[ReplyOutcome], None] | None = None
        #: Called with thread ids whose replies the spool could not keep, once the database is back.
        self.on_missed: Callable[[set[int]], Awaitable[None]] | None = None
        wait = self.options.write_max_wait_ms / 1000
        size = self.options.write_batch_size
        self._inserter = _WriteBatcher[NewReply, Stored]("insert", self._insert_batch, max_size=size, max_wait=wait)
        self._saver = _WriteBatcher[StanceWrite, bool | None]("save", self._save_batch, max_size=size, max_wait=wait)
        self._spooler = _WriteBatcher[Record, bool]("spool", self._spool_batch, max_size=500, max_wait=wait)
        self._inflight: Counter[int] = Counter()
        self._attempts: dict[int, int] = {}
        self._retry_at: dict[int, float] = {}
        self._missed_threads: set[int] = set()
        self._outage = False
        self._outage_logged = False
        self._sweep_requested = False
        self._sweeping = False
        self._wake = asyncio.Event()
        self._maintenance: asyncio.Task[None] | None = None
        self._backoff = self.options.retry_initial_s
        self._timers: set[asyncio.TimerHandle] = set()

    # -- state --------------------------------------------------------------------------------------------------

    @property
    def degraded(self) -> bool:
        """Whether writes go to the spool (the database failed and the spool is not yet replayed)."""
        return self._outage or (self.spool is not None and len(self.spool) > 0)

    @property
    def database_up(self) -> bool:
        """Whether the last database operation succeeded."""
        return not self._outage

    @property
    def spooled(self) -> int:
        """Writes waiting in the spool."""
        return len(self.spool) if self.spool is not None else 0

    @property
    def in_flight(self) -> int:
        """Replies being classified or saved right now."""
        return len(self._inflight)

    def idle(self) -> bool:
        """Nothing spooled, queued, in flight or due for a sweep (tests and benchmarks wait for this)."""
        return (
            not self.degraded
            and not self._inflight
            and not self._sweep_requested
            and not self._sweeping
            and len(self._inserter) == 0
            and len(self._saver) == 0
            and len(self._spooler) == 0
            and self.service.in_flight == 0
        )

    async def wait_idle(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a plain deadline
        """Wait until :meth:`idle` (raises ``TimeoutError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                raise TimeoutError("the reply pipeline did not settle")
            await asyncio.sleep(0.05)

    # -- events -------------------------------------------------------------------------------------------------

    async def on_reply(
        self,
        post: PostInfo,
        *,
        message_id: int,
        author_id: int,
        content: str,
        created_at: datetime,
        wait: bool = False,
    ) -> ReplyOutcome | None:
        """Store a new reply in a prompt thread, then classify it; the outcome once its stance is committed.

        ``None`` when the post is closed, the message is already stored (duplicate event) or its author opted out,
        and when the reply was deferred: kept in the spool while the database is down, or left ``pending`` while
        the model's queue is full. A deferred reply is classified in the background and its outcome goes to
        :attr:`notify`. With ``wait=True`` (someone is waiting, e.g. a slash command) a full queue is waited on,
        and a reply that had to be spooled raises :class:`ReplyBufferedError`.
        """
        if post.closed:
            return None
        received = time.perf_counter()
        self._start()
        self.observer.reply_received()
        stored = await self._store(NewReply(post, message_id, author_id, content, created_at))
        if isinstance(stored, _Outcome):
            if wait:
                raise ReplyBufferedError()
            return None
        if stored is None:
            log.debug("Message %s already stored (or its author opted out); not stored again", message_id)
            self.observer.reply_duplicate()
            return None
        return await self._classify(stored, wait=wait, received=received)

    async def ingest(self, items: Sequence[NewReply]) -> int:
        """Store replies found in channel history (catch-up); they are classified in the background. Returns
        how many were new."""
        self._start()
        results = await asyncio.gather(*(self._store(item) for item in items))
        new = sum(1 for r in results if isinstance(r, ReplyRef))
        if new:
            self.observer.replies_caught_up(new)
            self._request_sweep()
        return new

    async def on_edit(self, message_id: int, content: str, edited_at: datetime) -> ReplyOutcome | None:
        """Reclassify an edited reply (spooled while the database is down)."""
        self._start()
        record: Record = {
            "op": "edit",
            "message_id": message_id,
            "content": content,
            "edited_at": edited_at.isoformat(),
        }
        if self.degraded:
            await self._spool_or_drop(record)
            return None
        try:
            reply = await self.store.edit_reply(message_id, content, edited_at)
        except StorageError as exc:
            self._database_failed("edit", exc)
            await self._spool_or_drop(record)
            return None
        return None if reply is None else await self._classify(reply, wait=True, edited=True)

    async def on_delete(self, message_id: int) -> bool:
        """Retract a deleted reply from the tally (spooled while the database is down: then ``False``)."""
        self._start()
        record: Record = {"op": "delete", "message_id": message_id}
        if self.degraded:
            await self._spool_or_drop(record)
            return False
        try:
            return await self.store.delete_reply(message_id)
        except StorageError as exc:
            self._database_failed("delete", exc)
            await self._spool_or_drop(record)
            return False

    async def resume(self) -> None:
        """Start the background work: replay the spool, then classify replies left pending by the last run.

        Returns at once; outcomes go to :attr:`notify` (use :meth:`wait_idle` to wait for them).
        """
        self._start()
        self._request_sweep()

    async def close(self) -> None:
        """Stop background work and finish the writes already queued (or spool them)."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        await self._inserter.close()
        await self._saver.close()
        await self._spooler.close()
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)

    # -- storing ------------------------------------------------------------------------------------------------

    async def _store(self, item: NewReply) -> Stored:
        if self.degraded and self.spool is not None:
            return await self._spool_or_drop(_reply_record(item), thread_id=item.post.thread_id)
        return await self._inserter.submit(item)

    async def _insert_batch(self, items: list[NewReply]) -> list[Stored]:
        started = time.perf_counter()
        try:
            refs = await self.store.add_replies(items)
            self.observer.write_batch("insert", len(items), time.perf_counter() - started)
        except Exception as exc:
            self._database_failed("insert", exc)
            if self.spool is None:
                raise StorageError("The database is unavailable right now.") from exc
            accepted = await self._spool_batch([_reply_record(i) for i in items])
            return [SPOOLED if ok else self._dropped(i.post.thread_id) for i, ok in zip(items, accepted, strict=True)]
        stored = sum(1 for ref in refs if ref is not None)
        if stored:
            self.observer.replies_stored(stored)
        return list(refs)

    def _dropped(self, thread_id: int) -> _Outcome:
        self._missed_threads.add(thread_id)
        return DROPPED

    async def _spool_or_drop(self, record: Record, *, thread_id: int | None = None) -> _Outcome:
        if self.spool is None:
            raise StorageError("The database is unavailable right now.")
        if await self._spooler.submit(record):
            return SPOOLED
        if thread_id is not None:
            self._missed_threads.add(thread_id)
        return DROPPED

    async def _spool_batch(self, records: list[Record]) -> list[bool]:
        """Append records to the spool (fsynced, in a thread); ``False`` for those it had no room for."""
        assert self.spool is not None
        try:
            accepted = await asyncio.to_thread(self.spool.append, records)
        except OSError:
            log.exception("The spool could not be written; %d writes are lost to it", len(records))
            accepted = 0
        if accepted:
            self.observer.writes_spooled(accepted)
        if accepted < len(records):
            self.observer.writes_dropped(len(records) - accepted)
            log.error(
                "Spool full (%d writes, %d bytes): %d writes not kept; their threads are caught up from history "
                "once the database is back",
                len(self.spool),
                self.spool.size_bytes,
                len(records) - accepted,
            )
        self._wake.set()
        return [i < accepted for i in range(len(records))]

    def _database_failed(self, operation: str, exc: BaseException) -> None:
        self.observer.database_error(operation)
        if not self._outage_logged:
            log.error(
                "Database %s failed (%s: %s); writes go to the spool until it answers again",
                operation,
                type(exc).__name__,
                str(exc.__cause__ or exc).splitlines()[0][:200] if str(exc.__cause__ or exc) else "",
            )
            self._outage_logged = True
        self._outage = True
        self._wake.set()

    # -- classifying ----------------------------------------------------------------------------------------------

    async def _classify(
        self,
        reply: ReplyRef,
        *,
        wait: bool,
        received: float | None = None,
        edited: bool = False,
        held: bool = False,
    ) -> ReplyOutcome | None:
        """Classify a stored reply and save its stance; ``None`` when deferred, failed (retried later) or stale.

        ``held``: the caller already counted this reply as in flight (sweeps: so the next page skips it).
        """
        if not held:
            self._inflight[reply.id] += 1
        try:
            try:
                future = await self.service.submit(reply.prompt_slug, reply.content, guild_id=reply.guild_id, wait=wait)
            except UnknownPromptError:
                log.warning("Reply %s belongs to prompt %s, which is not loaded", reply.message_id, reply.prompt_slug)
                return None
            if future is None:  # the model's queue is full: the reply stays pending; a sweep takes it later
                self._request_sweep()
                return None
            try:
                result = await future
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self._give_up(reply):
                    return None
                result = FAILED
            version = self.service.version(reply.prompt_slug, reply.guild_id)
            saved = await self._saver.submit(StanceWrite(reply, result, version))
            if not saved:
                return None  # stale (edited, deleted, relabelled meanwhile) or the database failed: swept later
            self._attempts.pop(reply.id, None)
            self._retry_at.pop(reply.id, None)
            outcome = ReplyOutcome(reply, result, version, edited)
            latency = time.perf_counter() - received if received is not None else None
            self.observer.stance_committed(outcome, latency)
            return outcome
        finally:
            self._inflight[reply.id] -= 1
            if self._inflight[reply.id] <= 0:
                del self._inflight[reply.id]

    def _give_up(self, reply: ReplyRef) -> bool:
        """Count a failed classification; ``True`` once it failed ``max_attempts`` times (store it as failed),
        else schedule a retry with backoff."""
        attempts = self._attempts.get(reply.id, 0) + 1
        self._attempts[reply.id] = attempts
        if attempts >= self.options.max_attempts:
            log.error("Reply %s failed classification %d times; stored as unclear", reply.message_id, attempts)
            return True
        delay = min(self.options.retry_initial_s * 2**attempts, self.options.retry_max_s)
        self._retry_at[reply.id] = time.monotonic() + delay
        handle = asyncio.get_running_loop().call_later(delay, self._request_sweep)
        self._timers.add(handle)
        return False

    async def _save_batch(self, writes: list[StanceWrite]) -> list[bool | None]:
        started = time.perf_counter()
        try:
            saved: list[bool | None] = list(await self.store.save_stances(writes))
        except Exception as exc:
            self._database_failed("save", exc)
            self._request_sweep()
            return [None] * len(writes)
        self.observer.write_batch("save", len(writes), time.perf_counter() - started)
        return saved

    # -- background work ------------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.create_task(self._maintain(), name="pipeline-maintenance")

    def _request_sweep(self) -> None:
        self._sweep_requested = True
        self._wake.set()

    async def _maintain(self) -> None:
        """Replay the spool when the database is back, sweep pending replies; back off while it fails."""
        while True:
            timed_out = False
            try:
                await asyncio.wait_for(self._wake.wait(), self.options.sweep_interval_s)
            except TimeoutError:
                timed_out = True
            self._wake.clear()
            try:
                await self._recover()
                if self._sweep_requested or timed_out:
                    self._sweep_requested = False
                    await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.observer.database_error("retry")
                delay = self._backoff * random.uniform(0.8, 1.2)
                log.warning("Pipeline retry failed (%s); next try in %.1f s", type(exc).__name__, delay)
                log.debug("Pipeline retry failure", exc_info=True)
                self._backoff = min(self._backoff * 2, self.options.retry_max_s)
                self._sweep_requested = True
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            self._backoff = self.options.retry_initial_s

    async def _recover(self) -> None:
        if not self.degraded:
            return
        await self.store.ping()
        if self.spool is not None:
            await self._replay_spool()
        if self._outage:
            log.warning("Database is answering again; the spool is replayed")
        self._outage = False
        self._outage_logged = False
        self._sweep_requested = True
        if self._missed_threads and self.on_missed is not None:
            threads, self._missed_threads = self._missed_threads, set()
            try:
                await self.on_missed(threads)
            except Exception:
                log.exception("Catching up %d threads after a full spool failed", len(threads))
                self._missed_threads |= threads

    async def _replay_spool(self) -> None:
        assert self.spool is not None
        while segments := await asyncio.to_thread(self.spool.sealed_segments):
            for segment in segments:
                records = await asyncio.to_thread(self.spool.read, segment)
                await self._apply(records)
                await asyncio.to_thread(self.spool.remove, segment)
                log.info("Replayed %d spooled writes from %s", len(records), segment.name)

    async def _apply(self, records: list[Record]) -> None:
        """Write spooled records in order: runs of replies as batches, edits and deletes one by one."""
        run: list[Record] = []
        for record in records:
            if record.get("op") == "reply":
                run.append(record)
                if len(run) >= self.options.write_batch_size:
                    await self._apply_replies(run)
                    run = []
                continue
            if run:
                await self._apply_replies(run)
                run = []
            await self._apply_one(record)
        if run:
            await self._apply_replies(run)

    async def _apply_replies(self, records: list[Record]) -> None:
        items = [_reply_from_record(r) for r in records]
        try:
            refs = await self.store.add_replies(items)
        except Exception:
            await self.store.ping()  # still down: raise, and the whole segment is replayed after a backoff
            refs = []
            for record, item in zip(records, items, strict=True):  # up, but something in the batch is refused
                try:
                    refs.extend(await self.store.add_replies([item]))
                except Exception as exc:
                    await self.store.ping()
                    await asyncio.to_thread(self.spool.reject, record, repr(exc))  # type: ignore[union-attr]
        stored = sum(1 for ref in refs if ref is not None)
        if stored:
            self.observer.replies_stored(stored)
            self._sweep_requested = True

    async def _apply_one(self, record: Record) -> None:
        try:
            if record.get("op") == "edit":
                edited = datetime.fromisoformat(record["edited_at"])
                if await self.store.edit_reply(int(record["message_id"]), str(record["content"]), edited) is not None:
                    self._sweep_requested = True
            elif record.get("op") == "delete":
                await self.store.delete_reply(int(record["message_id"]))
            else:
                raise ValueError(f"unknown spool op {record.get('op')!r}")
        except Exception as exc:
            await self.store.ping()
            await asyncio.to_thread(self.spool.reject, record, repr(exc))  # type: ignore[union-attr]

    async def _sweep(self) -> None:
        """Classify every pending reply that nobody is classifying (oldest first, bounded concurrency)."""
        self._sweeping = True
        limit = asyncio.Semaphore(self.options.sweep_concurrency)
        tasks: set[asyncio.Task[None]] = set()
        swept = 0
        seen: set[int] = set()
        try:
            cursor = 0
            while batch := await self.store.pending_after(cursor, limit=256):
                cursor = batch[-1].id
                now = time.monotonic()
                for reply in batch:
                    seen.add(reply.id)
                    if reply.id in self._inflight or not self.owns_guild(reply.guild_id):
                        continue
                    if self._retry_at.get(reply.id, 0) > now:
                        continue
                    self._retry_at.pop(reply.id, None)
                    await limit.acquire()
                    self._inflight[reply.id] += 1  # before the task starts: the next page must not take it again
                    task = asyncio.create_task(self._classify_in_background(reply))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    task.add_done_callback(lambda _task: limit.release())
                    swept += 1
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._sweeping = False
        for gone in (self._attempts.keys() | self._retry_at.keys()) - seen:  # classified, deleted or relabelled
            self._attempts.pop(gone, None)
            self._retry_at.pop(gone, None)
        if swept:
            log.info("Classified %d pending replies in the background", swept)

    async def _classify_in_background(self, reply: ReplyRef) -> None:
        outcome = await self._classify(reply, wait=True, held=True)
        if outcome is not None and self.notify is not None:
            try:
                self.notify(outcome)
            except Exception:
                log.exception("Outcome listener failed")


def _reply_record(item: NewReply) -> Record:
    return {
        "op": "reply",
        "post": asdict(item.post),
        "message_id": item.message_id,
        "author_id": item.author_id,
        "content": item.content,
        "created_at": item.created_at.isoformat(),
    }


def _reply_from_record(record: dict[str, Any]) -> NewReply:
    return NewReply(
        PostInfo(**record["post"]),
        int(record["message_id"]),
        int(record["author_id"]),
        str(record["content"]),
        datetime.fromisoformat(record["created_at"]),
    )


def spool_folder(settings: Settings) -> Path:
    """This process's spool: under ``pipeline.spool_dir``, one folder per database and shard set, so neither
    two test databases nor two shard processes ever share one."""
    ids = settings.bot.shard_ids
    key = hashlib.sha256(f"{settings.database.url}|{settings.bot.shard_count}|{ids}".encode()).hexdigest()[:10]
    suffix = f"-shards-{'-'.join(map(str, ids))}" if ids else ""
    return settings.path(settings.pipeline.spool_dir) / f"{key}{suffix}"


def shard_filter(settings: Settings) -> Callable[[int], bool] | None:
    """Whether a guild is served by this process's shards (``None``: this process serves every guild)."""
    shards = ShardSet.of(settings.bot.shard_count, settings.bot.shard_ids)
    return None if shards is None else shards.owns


def build_pipeline(
    settings: Settings, repo: Repository, service: StanceService, *, observer: PipelineObserver | None = None
) -> ReplyPipeline:
    """The pipeline as configured: batched writes, this process's spool (opened and locked here), retries."""
    conf = settings.pipeline
    spool = Spool(spool_folder(settings), max_bytes=conf.spool_max_mb * 1024 * 1024)
    spool.open()
    options = PipelineOptions(
        write_batch_size=conf.write_batch_size,
        write_max_wait_ms=conf.write_max_wait_ms,
        retry_initial_s=conf.retry_initial_s,
        retry_max_s=conf.retry_max_s,
        max_attempts=conf.max_attempts,
        sweep_interval_s=conf.sweep_interval_s,
    )
    return ReplyPipeline(
        repo, service, spool=spool, options=options, observer=observer, owns_guild=shard_filter(settings)
    )
