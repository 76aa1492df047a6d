"""What the pipeline reports and how it is tuned: outcomes, the observer protocol, options and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.core.errors import StorageError
from bot.core.prompts import UNCLEAR
from bot.core.stance import StanceResult
from bot.storage.records import ReplyRef

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
    """What the pipeline reports (metrics implement this; see :mod:`bot.metrics`). Each method does nothing by
    default, so :class:`NullObserver` is just this protocol."""

    def reply_received(self) -> None:
        """A new reply reached the pipeline."""
        return None

    def replies_stored(self, count: int) -> None:
        """Replies were written to the database (live, from the spool or from history)."""
        return None

    def reply_duplicate(self) -> None:
        """A reply was already stored (duplicate event) or not stored (opt-out)."""
        return None

    def stance_committed(self, outcome: ReplyOutcome, latency_s: float | None) -> None:
        """A model stance was committed; ``latency_s`` from the reply's arrival, when it arrived live."""
        return None

    def database_error(self, operation: str) -> None:
        """A database operation failed."""
        return None

    def write_batch(self, operation: str, size: int, seconds: float) -> None:
        """A batch of ``size`` writes (``insert`` replies, ``save`` stances) took ``seconds``."""
        return None

    def writes_spooled(self, count: int) -> None:
        """Writes went to the on-disk spool (database down)."""
        return None

    def writes_dropped(self, count: int) -> None:
        """Writes could not be kept (spool full); their threads are caught up from history later."""
        return None

    def replies_caught_up(self, count: int) -> None:
        """Replies found in channel history were stored."""
        return None


class NullObserver(PipelineObserver):
    """Reports nowhere."""


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
