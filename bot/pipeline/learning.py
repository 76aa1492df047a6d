"""Learning from the server at run time: after labels arrive for a prompt, train its head in the background and
switch the stance service to it when it is better (the rules are in :mod:`bot.core.learning`).

A training runs in one worker thread shared by all prompts (never on the event loop; one at a time, so it takes
one of the machine's cores at most), and one prompt never has two checks at once: a label that arrives while its
prompt trains marks it to be checked again afterwards. The trained head, its figures and the switch are stored
(:class:`bot.storage.learning.Learning`), so a restart serves the same head (:meth:`ServerLearning.load`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bot.core import learning
from bot.core.adapt import AdaptedClassifier, PromptHead
from bot.core.errors import UnknownPromptError
from bot.core.moderation import AuditRecord
from bot.core.service import StanceService
from bot.core.stance import GatedClassifier, StanceClassifier, StanceFeatures
from bot.storage.learning import HeadRecord, Learning

log = logging.getLogger(__name__)

#: A prompt in a guild: (guild id, prompt slug).
PromptKey = tuple[int, str]


@dataclass
class Trained:
    """What one background training did (for listeners and tests)."""

    guild_id: int
    slug: str
    outcome: learning.TrainingOutcome
    record: HeadRecord
    audit: AuditRecord


class ServerLearning:
    """Trains prompts' heads from their labels in the background and serves them when they are better."""

    def __init__(
        self,
        store: Learning,
        service: StanceService,
        policy: learning.LearningPolicy,
        *,
        on_trained: Callable[[Trained], None] | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.policy = policy
        self.on_trained = on_trained
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learning")
        self._running: dict[PromptKey, asyncio.Task[None]] = {}
        self._again: set[PromptKey] = set()
        #: Trainings finished since start (switched or not).
        self.trainings = 0

    def learnable(self, guild_id: int, slug: str) -> bool:
        """Whether the prompt is one the guild added itself (a seed prompt is shared by every guild and served by
        its own trained model)."""
        try:
            return self.service.catalog.owner(slug, guild_id) == guild_id
        except UnknownPromptError:
            return False

    def poke(self, guild_id: int, slug: str) -> None:
        """Labels changed for a prompt: check it in the background (again after the running check, if any)."""
        if not self.policy.enabled or not self.learnable(guild_id, slug):
            return
        key = (guild_id, slug)
        if key in self._running:
            self._again.add(key)
            return
        self._running[key] = asyncio.create_task(self._loop(key), name=f"learning:{guild_id}:{slug}")

    def busy(self, guild_id: int, slug: str) -> bool:
        """Whether a check or training of the prompt is under way."""
        return (guild_id, slug) in self._running

    async def idle(self) -> None:
        """Wait until no check is running (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _loop(self, key: PromptKey) -> None:
        try:
            while True:
                self._again.discard(key)
                try:
                    await self.check(*key)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a background loop logs and goes on
                    log.exception("Learning check of prompt %s in guild %s failed", key[1], key[0])
                if key not in self._again:
                    break
        finally:
            self._running.pop(key, None)

    async def check(self, guild_id: int, slug: str) -> Trained | None:
        """Train the prompt's head if its labels call for it; switch to it when it is better. ``None`` when no
        training was due (or the prompt's model cannot take a head)."""
        served = await self.service.served(slug, guild_id)
        base, current = learning.split_served(served)
        if base is None:
            return None
        labelled = await self.store.labelled_replies(guild_id, slug)
        last = await self.store.latest_head(guild_id, slug)
        last_n = last.n_labels if last is not None and last.base_version == base.version else None
        if not self.policy.due(len(labelled), last_n):
            return None
        active = await self.store.active_head(guild_id, slug) if current is not None else None
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(
            self._executor,
            lambda: learning.train(
                base, labelled, current=current, current_trained_at=active.trained_at if active else None
            ),
        )
        record, audit = await self.store.record_training(
            guild_id, slug, outcome.head, seconds=outcome.seconds, switch=outcome.switch, summary=outcome.summary
        )
        self.trainings += 1
        if outcome.switch:
            model = self._serving(served, base, outcome.head)
            self.service.install(slug, guild_id, model)
            log.info(
                "Prompt %s in guild %s: switched to %s (%s; trained in %.2f s)",
                slug,
                guild_id,
                model.version,
                outcome.summary,
                outcome.seconds,
            )
        else:
            log.info(
                "Prompt %s in guild %s: kept %s; the new head was not better (%s)",
                slug,
                guild_id,
                served.version,
                outcome.summary,
            )
        trained = Trained(guild_id, slug, outcome, record, audit)
        if self.on_trained is not None:
            self.on_trained(trained)
        return trained

    @staticmethod
    def _serving(served: StanceClassifier, base: StanceFeatures, head: PromptHead) -> StanceClassifier:
        """The base with ``head``, behind the same checks as the model it replaces."""
        adapted = AdaptedClassifier(base, head)
        if isinstance(served, GatedClassifier):
            return GatedClassifier(
                adapted,
                max_chars=served.max_chars,
                multilingual=served.multilingual,
                languages=served.languages,
                detect=served.detect,
            )
        return adapted

    async def load(self) -> int:
        """Serve the stored heads again (after a start); a head whose base or labels changed is retired. Returns
        how many serve."""
        serving = 0
        for record in await self.store.active_heads():
            if not self.learnable(record.guild_id, record.slug):
                continue
            served = await self.service.served(record.slug, record.guild_id)
            base, _ = learning.split_served(served)
            try:
                if base is None or base.version != record.base_version:
                    raise ValueError("the model under it changed")
                model = self._serving(served, base, record.prompt_head())
            except ValueError as exc:
                log.warning(
                    "Head %s of prompt %s in guild %s retired: %s", record.version, record.slug, record.guild_id, exc
                )
                await self.store.deactivate(record.guild_id, record.slug)
                continue
            self.service.install(record.slug, record.guild_id, model)
            serving += 1
        if serving:
            log.info("Serving %d learned prompt head(s)", serving)
        return serving

    async def close(self) -> None:
        """Stop running checks and the worker thread."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
