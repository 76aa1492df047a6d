"""What happens to a reply: store it, classify it off the event loop, store its stance. No discord.py here.

Modules: :mod:`~bot.pipeline.facade` (:class:`ReplyPipeline`, what the bot calls), :mod:`~bot.pipeline.batcher`
(one transaction per batch of writes), :mod:`~bot.pipeline.codec` (spool records), :mod:`~bot.pipeline.recovery`
(the spool while the database is down, its replay after), :mod:`~bot.pipeline.sweeper` (pending replies in the
background), :mod:`~bot.pipeline.events` (outcomes, the observer protocol, options).

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
  the threads whose replies could not be kept are handed to the pipeline's ``on_missed`` (catch-up from
  channel history) once the database is back.
* **Failed classifications are retried** with backoff; after ``max_attempts`` the reply is stored as ``unclear``
  with the reason, so one poisonous reply cannot loop forever.
"""

from __future__ import annotations

from bot.pipeline.events import (
    FAILED,
    NullObserver,
    PipelineObserver,
    PipelineOptions,
    ReplyBufferedError,
    ReplyOutcome,
)
from bot.pipeline.facade import ReplyPipeline, build_pipeline, shard_filter, spool_folder

__all__ = [
    "FAILED",
    "NullObserver",
    "PipelineObserver",
    "PipelineOptions",
    "ReplyBufferedError",
    "ReplyOutcome",
    "ReplyPipeline",
    "build_pipeline",
    "shard_filter",
    "spool_folder",
]
