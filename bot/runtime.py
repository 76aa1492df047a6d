"""Assembling the bot's parts from settings (shared by ``run``, ``sandbox`` and the tests)."""

from __future__ import annotations

import logging
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
