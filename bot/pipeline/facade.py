"""The reply pipeline: what the bot calls for a new, edited or deleted reply. No discord.py here."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from bot.config import Settings
from bot.core.errors import StorageError, UnknownPromptError
from bot.core.service import StanceService
from bot.core.shards import ShardSet
from bot.core.tasks import BackgroundTask
from bot.durability import Spool
from bot.pipeline.batcher import WriteBatcher
from bot.pipeline.codec import delete_record, edit_record, reply_record
from bot.pipeline.events import (
    FAILED,
    NullObserver,
    PipelineObserver,
    PipelineOptions,
    ReplyBufferedError,
    ReplyOutcome,
)
from bot.pipeline.recovery import SPOOLED, Deferred, Recovery
from bot.pipeline.sweeper import Sweeper
from bot.storage.records import NewReply, PostInfo, ReplyRef, StanceWrite
from bot.storage.writes import Writes

log = logging.getLogger(__name__)

Stored = ReplyRef | None | Deferred


class ReplyPipeline:
    """Stores replies before classifying them; see the package docstring for the guarantees.

    Its collaborators come in through the constructor: ``writes`` (the storage write path), ``service`` (the stance
    models), ``spool`` (the on-disk buffer used while the database is down), ``observer`` (metrics), ``notify``
    (receives outcomes nobody awaits: sweeps, replays) and ``on_missed`` (catches up threads whose replies a full
    spool could not keep).
    """

    def __init__(
        self,
        writes: Writes,
        service: StanceService,
        *,
        spool: Spool | None = None,
        options: PipelineOptions | None = None,
        observer: PipelineObserver | None = None,
        owns_guild: Callable[[int], bool] | None = None,
        notify: Callable[[ReplyOutcome], None] | None = None,
        on_missed: Callable[[set[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = writes
        self.service = service
        self.options = options or PipelineOptions()
        self.observer: PipelineObserver = observer or NullObserver()
        self.notify = notify
        self.owns_guild = owns_guild or (lambda _guild_id: True)
        self.recovery = Recovery(
            writes, spool, options=self.options, observer=self.observer, wake=self._wake_up, on_missed=on_missed
        )
        self.sweeper = Sweeper(
            writes,
            self._classify_in_background,
            options=self.options,
            owns_guild=self.owns_guild,
            request=self._request_sweep,
        )
        wait = self.options.write_max_wait_ms / 1000
        size = self.options.write_batch_size
        self._inserter = WriteBatcher[NewReply, Stored]("insert", self._insert_batch, max_size=size, max_wait=wait)
        self._saver = WriteBatcher[StanceWrite, bool | None]("save", self._save_batch, max_size=size, max_wait=wait)
        self._sweep_requested = False
        self._wake = asyncio.Event()
        self._maintenance = BackgroundTask("pipeline-maintenance", self._maintain)
        self._backoff = self.options.retry_initial_s

    # -- state --------------------------------------------------------------------------------------------------

    @property
    def spool(self) -> Spool | None:
        """The on-disk buffer used while the database is down."""
        return self.recovery.spool

    @property
    def degraded(self) -> bool:
        """Whether writes go to the spool (the database failed and the spool is not yet replayed)."""
        return self.recovery.degraded

    @property
    def database_up(self) -> bool:
        """Whether the last database operation succeeded."""
        return not self.recovery.outage

    @property
    def spooled(self) -> int:
        """Writes waiting in the spool."""
        return self.recovery.spooled

    @property
    def in_flight(self) -> int:
        """Replies being classified or saved right now."""
        return len(self.sweeper.inflight)

    def idle(self) -> bool:
        """Nothing spooled, queued, in flight or due for a sweep (tests and benchmarks wait for this)."""
        return (
            not self.degraded
            and not self.sweeper.inflight
            and not self._sweep_requested
            and not self.sweeper.sweeping
            and len(self._inserter) == 0
            and len(self._saver) == 0
            and self.recovery.queued == 0
            and self.service.in_flight == 0
        )

    async def wait_idle(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 - a plain deadline
        """Wait until :meth:`idle` (raises ``TimeoutError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() > deadline:
                raise TimeoutError("the reply pipeline did not settle")
            await asyncio.sleep(0.05)

    async def settle(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109 - a plain deadline
        """Replay the spool now: called before members' data is read or removed (``/stance mydata``,
        ``/stance forget-me``, the retention purge), so that no reply waiting in the spool escapes them.

        Raises :class:`StorageError` when the database is down or the spool is not replayed within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while self.degraded or self.recovery.queued:
            if time.monotonic() > deadline:
                raise StorageError("The database is catching up after an outage; try again in a minute.")
            self._maintenance.start()
            self._wake_up()
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
        ``notify``. With ``wait=True`` (someone is waiting, e.g. a slash command) a full queue is waited on,
        and a reply that had to be spooled raises :class:`ReplyBufferedError`.
        """
        if post.closed:
            return None
        received = time.perf_counter()
        self._maintenance.start()
        self.observer.reply_received()
        stored = await self._store(NewReply(post, message_id, author_id, content, created_at))
        if isinstance(stored, Deferred):
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
        self._maintenance.start()
        results = await asyncio.gather(*(self._store(item) for item in items))
        new = sum(1 for r in results if isinstance(r, ReplyRef))
        if new:
            self.observer.replies_caught_up(new)
            self._request_sweep()
        return new

    async def on_edit(self, message_id: int, content: str, edited_at: datetime) -> ReplyOutcome | None:
        """Reclassify an edited reply (spooled while the database is down)."""
        self._maintenance.start()
        record = edit_record(message_id, content, edited_at)
        if self.degraded:
            await self.recovery.keep(record)
            return None
        try:
            reply = await self.store.edit_reply(message_id, content, edited_at)
        except StorageError as exc:
            self.recovery.failed("edit", exc)
            await self.recovery.keep(record)
            return None
        return None if reply is None else await self._classify(reply, wait=True, edited=True)

    async def on_delete(self, message_id: int) -> bool:
        """Retract a deleted reply from the tally (spooled while the database is down: then ``False``)."""
        self._maintenance.start()
        record = delete_record(message_id)
        if self.degraded:
            await self.recovery.keep(record)
            return False
        try:
            return await self.store.delete_reply(message_id)
        except StorageError as exc:
            self.recovery.failed("delete", exc)
            await self.recovery.keep(record)
            return False

    async def resume(self) -> None:
        """Start the background work: replay the spool, then classify replies left pending by the last run.

        Returns at once; outcomes go to ``notify`` (use :meth:`wait_idle` to wait for them).
        """
        self._maintenance.start()
        self._request_sweep()

    async def close(self) -> None:
        """Stop background work and finish the writes already queued (or spool them)."""
        self.sweeper.close()
        await self._maintenance.stop()
        await self._inserter.close()
        await self._saver.close()
        await self.recovery.close()

    # -- storing ------------------------------------------------------------------------------------------------

    async def _store(self, item: NewReply) -> Stored:
        if self.degraded and self.spool is not None:
            return await self.recovery.keep(reply_record(item), thread_id=item.post.thread_id)
        return await self._inserter.submit(item)

    async def _insert_batch(self, items: list[NewReply]) -> list[Stored]:
        started = time.perf_counter()
        try:
            refs = await self.store.add_replies(items)
        except StorageError as exc:
            self.recovery.failed("insert", exc)
            accepted = await self.recovery.keep_all([reply_record(i) for i in items])
            return [
                SPOOLED if ok else self.recovery.dropped(i.post.thread_id)
                for i, ok in zip(items, accepted, strict=True)
            ]
        self.observer.write_batch("insert", len(items), time.perf_counter() - started)
        stored = sum(1 for ref in refs if ref is not None)
        if stored:
            self.observer.replies_stored(stored)
        return list(refs)

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
            self.sweeper.hold(reply.id)
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
                if not self.sweeper.give_up(reply):
                    return None
                result = FAILED
            version = result.model_version or self.service.version(reply.prompt_slug, reply.guild_id)
            saved = await self._saver.submit(StanceWrite(reply, result, version))
            if not saved:
                return None  # stale (edited, deleted, relabelled meanwhile) or the database failed: swept later
            self.sweeper.succeeded(reply.id)
            outcome = ReplyOutcome(reply, result, version, edited)
            latency = time.perf_counter() - received if received is not None else None
            self.observer.stance_committed(outcome, latency)
            return outcome
        finally:
            self.sweeper.release(reply.id)

    async def _save_batch(self, writes: list[StanceWrite]) -> list[bool | None]:
        started = time.perf_counter()
        try:
            saved: list[bool | None] = list(await self.store.save_stances(writes))
        except StorageError as exc:
            self.recovery.failed("save", exc)
            self._request_sweep()
            return [None] * len(writes)
        self.observer.write_batch("save", len(writes), time.perf_counter() - started)
        return saved

    async def _classify_in_background(self, reply: ReplyRef) -> None:
        outcome = await self._classify(reply, wait=True, held=True)
        if outcome is not None and self.notify is not None:
            try:
                self.notify(outcome)
            except Exception:
                log.exception("Outcome listener failed")

    # -- background work ------------------------------------------------------------------------------------------

    def _wake_up(self) -> None:
        self._wake.set()

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
                if await self.recovery.recover():
                    self._sweep_requested = True
                if self._sweep_requested or timed_out:
                    self._sweep_requested = False
                    await self.sweeper.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, StorageError):
                    self.observer.database_error("retry")
                    log.debug("Pipeline retry failure", exc_info=True)
                else:
                    log.exception("Pipeline background work failed")
                delay = self._backoff * random.uniform(0.8, 1.2)
                log.warning("Pipeline retry failed (%s); next try in %.1f s", type(exc).__name__, delay)
                self._backoff = min(self._backoff * 2, self.options.retry_max_s)
                self._sweep_requested = True
                await asyncio.sleep(delay)
                self._wake.set()
                continue
            self._backoff = self.options.retry_initial_s


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
    settings: Settings,
    writes: Writes,
    service: StanceService,
    *,
    observer: PipelineObserver | None = None,
    notify: Callable[[ReplyOutcome], None] | None = None,
    on_missed: Callable[[set[int]], Awaitable[None]] | None = None,
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
        writes,
        service,
        spool=spool,
        options=options,
        observer=observer,
        owns_guild=shard_filter(settings),
        notify=notify,
        on_missed=on_missed,
    )
