"""The background side of learning from the server (bot.pipeline.learning) on a real database and the real base
model: one training per prompt at a time, the head survives a restart, a head whose base changed is retired."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest

from bot.assets import data_dir
from bot.config import Settings, model_registry
from bot.core.datasets import load_jsonl
from bot.core.encoder import SentenceEncoder
from bot.core.learning import LearningPolicy
from bot.core.prompts import UNCLEAR, PromptCatalog, load_prompt
from bot.core.registry import ModelRegistry
from bot.core.service import StanceService
from bot.pipeline.learning import ServerLearning
from bot.storage.repository import Repository
from tests.conftest import add_reply

PROMPT = data_dir() / "general" / "phones_in_school"
G = 77
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry(encoder: SentenceEncoder) -> ModelRegistry:
    return model_registry(Settings(), encoder=encoder)


async def _labelled_prompt(repo: Repository, catalog: PromptCatalog, n: int) -> None:
    """The prompt added by guild ``G``, posted, with ``n`` members who replied and declared a stance."""
    prompt = load_prompt(PROMPT.with_suffix(".toml"))
    catalog.add(prompt, G)
    await repo.prompts.add_guild_prompt(prompt, G, actor_id=1)
    post = await repo.prompts.record_post(prompt.id, guild_id=G, channel_id=5, message_id=6, thread_id=7, posted_by=1)
    examples = [ex for ex in load_jsonl(PROMPT.with_suffix(".jsonl")) if ex.label != UNCLEAR]
    random.Random(13).shuffle(examples)
    for i, ex in enumerate(examples[:n]):
        ref = await add_reply(
            repo, post, message_id=1000 + i, author_id=500 + i, content=ex.text, created_at=T0 + timedelta(minutes=i)
        )
        assert ref is not None
        await repo.writes.declare(post.message_id, author_id=500 + i, label=ex.label)


async def test_one_training_per_prompt_and_the_head_serves_again_after_a_restart(
    repo: Repository, registry: ModelRegistry
) -> None:
    catalog = PromptCatalog([])
    await _labelled_prompt(repo, catalog, 40)
    service = StanceService(catalog, registry.classifier)
    learning = ServerLearning(repo.learning, service, LearningPolicy(min_labels=30, step=20))
    try:
        base_version = (await service.served("phones_in_school", G)).version
        for _ in range(5):  # a burst of labels: one check runs, one more is queued behind it
            learning.poke(G, "phones_in_school")
        assert learning.busy(G, "phones_in_school")
        await learning.idle()
        assert learning.trainings == 1  # the queued check found nothing new to train on
        record = await repo.learning.latest_head(G, "phones_in_school")
        assert record is not None and record.n_labels == 40 and record.base_version == base_version
        f = record.figures
        assert record.active == (f["head_macro_f1"] > f["base_macro_f1"])
        serving = service.version("phones_in_school", G)
        assert serving == (f"{base_version}+{record.version}" if record.active else base_version)
    finally:
        await learning.close()
        await service.close()

    # a restart: a new service and learner on the same database serve the same model
    service = StanceService(catalog, registry.classifier)
    learning = ServerLearning(repo.learning, service, LearningPolicy(min_labels=30, step=20))
    try:
        assert await learning.load() == int(record.active)
        assert service.version("phones_in_school", G) == serving
        assert await learning.check(G, "phones_in_school") is None  # 40 labels: not due again before 60
    finally:
        await learning.close()
        await service.close()


async def test_a_head_whose_base_changed_is_retired_and_the_prompt_trains_again(
    repo: Repository, registry: ModelRegistry
) -> None:
    catalog = PromptCatalog([])
    await _labelled_prompt(repo, catalog, 30)
    service = StanceService(catalog, registry.classifier)
    learning = ServerLearning(repo.learning, service, LearningPolicy(min_labels=30, step=20))
    try:
        trained = await learning.check(G, "phones_in_school")
        assert trained is not None
        head = trained.outcome.head
        head.base_version = "general:some-other-model"  # as if the head had been trained on another base
        _ = await repo.learning.record_training(G, "phones_in_school", head, seconds=0.1, switch=True, summary="old")
        fresh = StanceService(catalog, registry.classifier)
        try:
            again = ServerLearning(repo.learning, fresh, LearningPolicy(min_labels=30, step=20))
            assert await again.load() == 0
            assert await repo.learning.active_head(G, "phones_in_school") is None
            assert "+" not in fresh.version("phones_in_school", G)
            retrained = await again.check(G, "phones_in_school")  # 30 labels, but none trained on this base yet
            assert retrained is not None and retrained.record.base_version != "general:some-other-model"
            await again.close()
        finally:
            await fresh.close()
    finally:
        await learning.close()
        await service.close()


async def test_learning_leaves_seed_prompts_and_disabled_servers_alone(
    repo: Repository, registry: ModelRegistry
) -> None:
    catalog = PromptCatalog([])
    await _labelled_prompt(repo, catalog, 30)
    service = StanceService(catalog, registry.classifier)
    off = ServerLearning(repo.learning, service, LearningPolicy(enabled=False))
    try:
        off.poke(G, "phones_in_school")
        assert not off.busy(G, "phones_in_school")
        assert not off.learnable(G, "alliance")  # not in this catalog at all
        await asyncio.sleep(0)
        assert await repo.learning.latest_head(G, "phones_in_school") is None
    finally:
        await off.close()
        await service.close()
