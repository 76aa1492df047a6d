"""The database-down side of the pipeline: writes go to the spool while the database is down; once it answers, the
spool is replayed in order, and the threads whose replies a full spool could not keep are caught up from history."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.core.errors import StorageError
from bot.durability import Record, Spool
from bot.pipeline.batcher import WriteBatcher
from bot.pipeline.codec import edit_from_record, reply_from_record
from bot.pipeline.events import PipelineObserver, PipelineOptions
from bot.storage.writes import Writes

log = logging.getLogger(__name__)


class Deferred:
    """Why a reply has no stored row yet."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


SPOOLED = Deferred("SPOOLED")
DROPPED = Deferred("DROPPED")


def _reason(exc: BaseException) -> str:
    """Why a write was refused, without the database's message (drivers quote the refused values in it): the
    exception classes and the SQLSTATE code when there is one."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 4:
        chain.append(seen)
        seen = seen.__cause__ or getattr(seen, "orig", None)
    codes = [str(code) for e in chain if (code := getattr(e, "sqlstate", None))]
    return " <- ".join(type(e).__name__ for e in chain) + (f" (SQLSTATE {codes[0]})" if codes else "")


class Recovery:
    """Keeps writes in the spool while the database is down and replays them when it is back."""

    def __init__(
        self,
        writes: Writes,
        spool: Spool | None,
        *,
        options: PipelineOptions,
        observer: PipelineObserver,
        wake: Callable[[], None],
        on_missed: Callable[[set[int]], Awaitable[None]] | None = None,
    ) -> None:
        self.writes = writes
        self.spool = spool
        self.options = options
        self.observer = observer
        self._wake = wake
        #: Called with thread ids whose replies the spool could not keep, once the database is back.
        self.on_missed = on_missed
        self._spooler = WriteBatcher[Record, bool](
            "spool", self._append, max_size=500, max_wait=options.write_max_wait_ms / 1000
        )
        self._missed_threads: set[int] = set()
        self.outage = False
        self._outage_logged = False

    @property
    def degraded(self) -> bool:
        """Whether writes go to the spool (the database failed and the spool is not yet replayed)."""
        return self.outage or (self.spool is not None and len(self.spool) > 0)

    @property
    def spooled(self) -> int:
        """Writes waiting in the spool."""
        return len(self.spool) if self.spool is not None else 0

    @property
    def queued(self) -> int:
        """Writes on their way into the spool."""
        return len(self._spooler)

    def failed(self, operation: str, exc: StorageError) -> None:
        """A database write failed: count it, log the outage once, and send writes to the spool until it is back."""
        self.observer.database_error(operation)
        if not self._outage_logged:
            reason = str(exc.__cause__ or exc)
            log.error(
                "Database %s failed (%s: %s); writes go to the spool until it answers again",
                operation,
                type(exc).__name__,
                reason.splitlines()[0][:200] if reason else "",
            )
            self._outage_logged = True
        self.outage = True
        self._wake()

    def dropped(self, thread_id: int) -> Deferred:
        """A write the spool had no room for: its thread is caught up from history once the database is back."""
        self._missed_threads.add(thread_id)
        return DROPPED

    async def keep(self, record: Record, *, thread_id: int | None = None) -> Deferred:
        """Put one write in the spool (``SPOOLED``), or note its thread when the spool is full (``DROPPED``)."""
        if self.spool is None:
            raise StorageError("The database is unavailable right now.")
        if await self._spooler.submit(record):
            return SPOOLED
        return self.dropped(thread_id) if thread_id is not None else DROPPED

    async def keep_all(self, records: list[Record]) -> list[bool]:
        """Put writes in the spool at once; ``False`` for those it had no room for."""
        if self.spool is None:
            raise StorageError("The database is unavailable right now.")
        return await self._append(records)

    async def _append(self, records: list[Record]) -> list[bool]:
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
        self._wake()
        return [i < accepted for i in range(len(records))]

    async def recover(self) -> bool:
        """If degraded and the database answers: replay the spool and catch up missed threads; ``True`` when it
        did (pending replies are then to be swept). Raises :class:`StorageError` while the database is down."""
        if not self.degraded:
            return False
        await self.writes.ping()
        if self.spool is not None:
            await self._replay()
        if self.outage:
            log.warning("Database is answering again; the spool is replayed")
        self.outage = False
        self._outage_logged = False
        if self._missed_threads and self.on_missed is not None:
            threads, self._missed_threads = self._missed_threads, set()
            try:
                await self.on_missed(threads)
            except Exception:
                log.exception("Catching up %d threads after a full spool failed", len(threads))
                self._missed_threads |= threads
        return True

    async def _replay(self) -> None:
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

    async def _reject(self, record: Record, exc: Exception) -> None:
        """A record the database refuses while it is up goes to ``rejected.jsonl`` (without its text: the store
        already tried every safe form of it, so the refusal is not about the text); one that failed because it
        is down again raises (the segment is replayed after a backoff)."""
        await self.writes.ping()
        assert self.spool is not None
        await asyncio.to_thread(self.spool.reject, record, _reason(exc))

    async def _apply_replies(self, records: list[Record]) -> None:
        items = [reply_from_record(r) for r in records]
        try:
            refs = await self.writes.add_replies(items)
        except Exception:
            await self.writes.ping()  # still down: raise, and the whole segment is replayed after a backoff
            refs = []
            for record, item in zip(records, items, strict=True):  # up, but something in the batch is refused
                try:
                    refs.extend(await self.writes.add_replies([item]))
                except Exception as exc:
                    await self._reject(record, exc)
        stored = sum(1 for ref in refs if ref is not None)
        if stored:
            self.observer.replies_stored(stored)

    async def _apply_one(self, record: Record) -> None:
        try:
            if record.get("op") == "edit":
                await self.writes.edit_reply(*edit_from_record(record))
            elif record.get("op") == "delete":
                await self.writes.delete_reply(int(record["message_id"]))
            else:
                raise ValueError(f"unknown spool op {record.get('op')!r}")
        except Exception as exc:
            await self._reject(record, exc)

    async def close(self) -> None:
        """Finish writes on their way into the spool, then close it."""
        await self._spooler.close()
        if self.spool is not None:
            await asyncio.to_thread(self.spool.close)
