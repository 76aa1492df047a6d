"""Assembling the bot's parts from settings (shared by ``run``, ``sandbox`` and the tests)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import Services, Stancebot
from bot.config import Settings, model_registry
from bot.core.encoder import SentenceEncoder
from bot.core.learning import LearningPolicy
from bot.core.prompts import PromptCatalog
from bot.core.registry import ModelRegistry
from bot.core.service import StanceService
from bot.metrics import Metrics, Observability, start_observability
from bot.pipeline import ReplyOutcome, build_pipeline
from bot.pipeline.learning import ServerLearning
from bot.storage.db import make_engine, make_sessionmaker, upgrade
from bot.storage.repository import Repository

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """A ready-to-start bot and what it owns."""

    bot: Stancebot
    services: Services
    engine: AsyncEngine
    observability: Observability | None = None

    async def shutdown(self, timeout: float) -> bool:  # noqa: ASYNC109 - a plain deadline
        """Stop gracefully within ``timeout`` seconds: stop reading gateway events, let the handlers already running
        store (and classify) their replies, then :meth:`aclose` (queued writes go to the database, or to the spool
        when it is down). ``False`` if the time ran out first (what was cut short is stored but unclassified, or
        read again from channel history at the next start)."""
        started = time.monotonic()
        reserve = min(2.0, timeout / 4)  # for aclose: flushing queued writes and closing connections

        def left() -> float:
            return timeout - (time.monotonic() - started)

        in_time = True
        try:
            await asyncio.wait_for(self.bot.stop_reading(), max(left() - reserve, 0.1))
        except TimeoutError:
            in_time = False
        busy = self.bot.in_flight
        if not await self.bot.wait_handled(left() - reserve):
            log.warning("Stopping with %d replies still being handled; they are classified at the next start", busy)
        try:
            await asyncio.wait_for(self.aclose(), max(left(), 0.1))
        except TimeoutError:
            log.error("Shutdown took longer than %.1f s; stopped without finishing", timeout)
            return False
        totals = self.observability.metrics.totals() if self.observability is not None else {}
        log.info(
            "Stopped in %.1f s: %s",
            time.monotonic() - started,
            ", ".join(f"{value} replies {key}" for key, value in totals.items()) or "nothing received",
            extra={"replies": totals},
        )
        return in_time

    async def aclose(self) -> None:
        """Close the bot (if started), finish queued writes, stop metrics, close the database engine."""
        if not self.bot.is_closed():
            await self.bot.close()
        else:
            await self.services.stance.close()
        await self.services.pipeline.close()
        if self.observability is not None:
            await self.observability.aclose()
        await self.engine.dispose()


def make_stance_service(settings: Settings, catalog: PromptCatalog, registry: ModelRegistry) -> StanceService:
    """The stance service for a catalog: trained models where there are, similarity otherwise."""
    return StanceService(
        catalog,
        registry.classifier,
        batch_size=settings.model.batch_size,
        max_wait_ms=settings.model.max_wait_ms,
        max_queue=settings.model.max_queue,
        backlog_window=settings.model.backlog_window,
    )


async def build_runtime(settings: Settings, *, encoder: SentenceEncoder | None = None) -> Runtime:
    """Check the models, migrate the database, load prompts and the model, and build the bot (not yet connected).

    A shipped or built model file that does not match its manifest stops the start with
    :class:`~bot.core.shipped.ModelIntegrityError` naming the file.
    """
    catalog = PromptCatalog.from_dir(settings.prompts_dir())
    registry = model_registry(settings, encoder=encoder)
    engine = make_engine(settings.database.url)
    await upgrade(engine)
    repo = Repository(
        make_sessionmaker(engine),
        count_mode=settings.bot.count_mode,
        declared_overrides=settings.moderation.declared_overrides,
        review_below=settings.moderation.review_below,
    )
    metrics = Metrics()
    service = make_stance_service(settings, catalog, registry)

    # The pipeline reports to the bot, which is built on it: its listeners find the bot when they are called.
    def notify(outcome: ReplyOutcome) -> None:
        bot.dispatch("stance_recorded", outcome)

    async def missed(threads: set[int]) -> None:
        bot.dispatch("threads_missed", threads)

    pipeline = build_pipeline(settings, repo.writes, service, observer=metrics, notify=notify, on_missed=missed)
    policy = LearningPolicy(settings.learning.enabled, settings.learning.min_labels, settings.learning.retrain_step)
    learning = ServerLearning(repo.learning, service, policy, on_trained=lambda t: bot.dispatch("prompt_trained", t))
    services = Services(settings, catalog, repo, service, pipeline, learning=learning)
    bot = Stancebot(services)
    observability = await start_observability(settings, bot, pipeline, service, metrics)
    return Runtime(bot, services, engine, observability)


#: The signals that stop ``stancebot run`` and ``stancebot sandbox`` gracefully.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While entered, SIGTERM and SIGINT set :attr:`received` (and call ``on_signal``) instead of killing the
    process, so that a graceful stop can follow."""

    def __init__(self, on_signal: Callable[[], object] | None = None) -> None:
        self.received = asyncio.Event()
        self.name = ""
        self._on_signal = on_signal

    def _handle(self, sig: signal.Signals) -> None:
        if self.received.is_set():
            return
        self.name = sig.name
        log.info("%s received: stopping", sig.name)
        self.received.set()
        if self._on_signal is not None:
            self._on_signal()

    def __enter__(self) -> StopSignals:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._handle, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def serve(runtime: Runtime, token: str) -> bool:
    """Run the bot until it stops or SIGTERM/SIGINT arrives, then stop gracefully within
    ``general.shutdown_timeout_s``; ``True`` if everything was finished in time. A bot that fails (e.g. Discord
    refuses the token) is closed and its error raised."""
    timeout = runtime.services.settings.general.shutdown_timeout_s
    with StopSignals() as signals:
        runner = asyncio.create_task(runtime.bot.start(token), name="stancebot")
        stopper = asyncio.create_task(signals.received.wait())
        try:
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if runner.done() and runner.exception() is not None:
            await runtime.aclose()
            raise runner.exception()  # type: ignore[misc]
        try:
            return await runtime.shutdown(timeout)
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
