"""A bounded on-disk buffer for writes the database could not take (it was down), replayed in order when it is back.

Records are JSON objects, one per line, appended to numbered segment files in one folder and fsynced before
:meth:`Spool.append` returns: a record the spool accepted survives a crash of the bot. Replay reads sealed
segments oldest first; a segment is deleted only after all its records reached the database, so a crash during
replay replays it again, which is harmless because every write it holds is idempotent (by message id).

The folder is locked (``flock``) while a process uses it, so two processes never share a spool. Records that the
database keeps refusing while it is up are moved to ``rejected.jsonl`` with the reason, never silently dropped; it
keeps their ids but never a message's text (which no privacy command could reach there).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import IO, Any

from bot.core.errors import ConfigError

log = logging.getLogger(__name__)

Record = dict[str, Any]

SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".jsonl"
REJECTED = "rejected.jsonl"
LOCK = ".lock"


class Spool:
    """An append-only, size-bounded queue of JSON records on disk. Thread-safe; blocking (call via a thread)."""

    def __init__(self, folder: Path, *, max_bytes: int = 64 * 1024 * 1024, segment_bytes: int = 1024 * 1024) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_file: IO[str] | None = None
        self._current: IO[bytes] | None = None
        self._current_path: Path | None = None
        self._next_seq = 0
        self._bytes = 0
        self._count = 0
        #: records per segment path, for the count
        self._segment_counts: dict[Path, int] = {}

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create and lock the folder; count what an earlier run left behind."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock_file = (self.folder / LOCK).open("a", encoding="utf-8")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise ConfigError(
                f"The spool folder {self.folder} is in use by another process (give each process its own "
                "pipeline.spool_dir, or its own shard ids)."
            ) from None
        self._lock_file = lock_file
        with self._lock:
            for path in self._segments():
                count = sum(1 for line in path.read_bytes().splitlines() if line.strip())
                self._segment_counts[path] = count
                self._count += count
                self._bytes += path.stat().st_size
                self._next_seq = max(self._next_seq, _seq(path) + 1)
        if self._count:
            log.warning(
                "Spool %s holds %d writes from an earlier run; they are replayed first", self.folder, self._count
            )

    def close(self) -> None:
        """Close the current segment and release the folder (removing it when nothing is left in it)."""
        with self._lock:
            self._seal()
            if self._count == 0:
                for path in self._segments():
                    path.unlink(missing_ok=True)
            if self._lock_file is not None:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
                self._lock_file = None
            if self._count == 0 and not (self.folder / REJECTED).exists():
                with contextlib.suppress(OSError):
                    (self.folder / LOCK).unlink(missing_ok=True)
                    self.folder.rmdir()

    # -- state --------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Bytes held in segment files."""
        return self._bytes

    # -- writing ------------------------------------------------------------------------------------------------

    def append(self, records: list[Record]) -> int:
        """Write records durably (fsync); returns how many were accepted, a prefix of ``records``. Fewer than all
        when the spool is full."""
        if not records:
            return 0
        lines = [json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in records]
        with self._lock:
            accepted = 0
            for line in lines:
                if self._bytes + len(line) > self.max_bytes:
                    break
                if self._current is None or self._current.tell() >= self.segment_bytes:
                    self._rotate()
                assert self._current is not None and self._current_path is not None
                self._current.write(line)
                self._bytes += len(line)
                self._count += 1
                self._segment_counts[self._current_path] = self._segment_counts.get(self._current_path, 0) + 1
                accepted += 1
            if self._current is not None and accepted:
                self._current.flush()
                os.fsync(self._current.fileno())
            return accepted

    def _rotate(self) -> None:
        self._seal()
        self._current_path = self.folder / f"{SEGMENT_PREFIX}{self._next_seq:012d}{SEGMENT_SUFFIX}"
        self._next_seq += 1
        self._current = self._current_path.open("ab")
        _fsync_dir(self.folder)

    def _seal(self) -> None:
        if self._current is not None:
            self._current.flush()
            os.fsync(self._current.fileno())
            self._current.close()
            self._current = None
            self._current_path = None

    # -- replaying ----------------------------------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        return sorted(self.folder.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"), key=_seq)

    def sealed_segments(self) -> list[Path]:
        """Every segment, oldest first; new appends go to a new segment from now on."""
        with self._lock:
            self._seal()
            return self._segments()

    def read(self, segment: Path) -> list[Record]:
        """The records of a segment; a torn last line (a crash mid-write) is skipped."""
        records = []
        for number, line in enumerate(segment.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("Spool segment %s line %d is incomplete (a crash mid-write); skipped", segment, number)
        return records

    def remove(self, segment: Path) -> None:
        """Forget a segment whose records all reached the database."""
        with self._lock:
            if not segment.exists():
                return
            self._bytes -= segment.stat().st_size
            self._count -= self._segment_counts.pop(segment, 0)
            segment.unlink()
            _fsync_dir(self.folder)

    def reject(self, record: Record, reason: str) -> None:
        """Keep a record the database refuses (while up) in ``rejected.jsonl`` for a human to look at: its ids and
        the reason, with the length of its text in place of the text."""
        kept = {k: v for k, v in record.items() if k != "content"}
        if "content" in record:
            kept["content_chars"] = len(str(record["content"]))
        with self._lock, (self.folder / REJECTED).open("a", encoding="utf-8") as out:
            out.write(json.dumps({"reason": _without_text(reason)[:500], "record": kept}) + "\n")
        log.error(
            "A spooled %s write was refused by the database and kept in %s: %s", record.get("op"), REJECTED, reason
        )


def _without_text(reason: str) -> str:
    """A database error's first line: drivers append the statement's parameters (the text) after it."""
    return reason.splitlines()[0] if reason else ""


def _seq(path: Path) -> int:
    return int(path.name.removeprefix(SEGMENT_PREFIX).removesuffix(SEGMENT_SUFFIX))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
