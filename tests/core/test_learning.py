"""Learning from the server, without Discord or a database: when a prompt trains, the switch rule, and the head
over whichever base serves a new prompt (the similarity model with the shipped encoder today; the general model
once one is shipped)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bot.assets import data_dir
from bot.config import Settings, model_registry
from bot.core import adapt, learning
from bot.core.datasets import Example, load_jsonl
from bot.core.encoder import SentenceEncoder
from bot.core.learning import LabelledReply, LearningPolicy
from bot.core.prompts import Prompt, PromptCatalog, load_prompt
from bot.core.registry import ModelRegistry
from bot.core.service import StanceService
from bot.core.stance import GatedClassifier, StanceFeatures

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NEW_PROMPT = data_dir() / "general" / "phones_in_school"  # held out of the general model's training


def _labelled(examples: Sequence[Example], *, start: int = 0) -> list[LabelledReply]:
    return [
        LabelledReply(i, ex.text, ex.label, learning.DECLARED, T0 + timedelta(minutes=i))
        for i, ex in enumerate(examples, start=start)
    ]


@pytest.fixture(scope="module")
def new_prompt() -> tuple[Prompt, list[Example]]:
    prompt = load_prompt(NEW_PROMPT.with_suffix(".toml"))
    examples = load_jsonl(NEW_PROMPT.with_suffix(".jsonl"))
    random.Random(13).shuffle(examples)
    return prompt, examples


@pytest.fixture(scope="module")
def registry(encoder: SentenceEncoder) -> ModelRegistry:
    return model_registry(Settings(), encoder=encoder)


class Toy:
    """A base whose scores and vectors the test sets (the switch rule is about the comparison, not a model)."""

    def __init__(self, scores: np.ndarray, vectors: np.ndarray) -> None:
        self.labels = ("a", "b", "unclear")
        self.temperature = 1.0
        self.threshold = 0.0
        self.version = "toy:1"
        self._rows = {f"r{i}": i for i in range(len(scores))}
        self._scores, self._vectors = scores, vectors

    def features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        idx = [self._rows[t] for t in texts]
        return self._scores[idx], self._vectors[idx]


def _toy(n: int, *, base_right: bool) -> tuple[Toy, list[LabelledReply]]:
    rng = np.random.default_rng(0)
    gold = np.arange(n) % 3
    onehot = np.eye(3)[gold]
    scores = 5.0 * onehot if base_right else rng.normal(size=(n, 3))
    vectors = 3.0 * onehot + 0.3 * rng.normal(size=(n, 3))  # the reply vector carries the label
    labels = [LabelledReply(i, f"r{i}", "a" if g == 0 else "b" if g == 1 else "unclear", "declared", T0)
              for i, g in enumerate(gold)]  # fmt: skip
    return Toy(scores, vectors), labels


def test_a_prompt_trains_at_min_labels_and_again_every_step() -> None:
    policy = LearningPolicy(min_labels=30, step=20)
    assert not policy.due(29, None)
    assert policy.due(30, None)
    assert not policy.due(49, 30) and policy.due(50, 30)
    assert not policy.due(65, 50) and policy.due(70, 50)
    assert not LearningPolicy(enabled=False).due(500, None)
    assert LearningPolicy().min_labels == adapt.MIN_LABELS


def test_the_switch_rule_takes_a_head_only_when_it_beats_the_base_on_held_back_labels() -> None:
    weak, labels = _toy(60, base_right=False)
    outcome = learning.train(weak, labels)
    f = outcome.figures
    assert f["n"] == 60 and f["head_macro_f1"] > f["base_macro_f1"] and outcome.switch
    assert "k-fold macro-F1 head" in outcome.summary

    perfect, labels = _toy(60, base_right=True)
    outcome = learning.train(perfect, labels)
    assert outcome.figures["base_macro_f1"] == 1.0 and not outcome.switch  # a tie is not better


def test_a_new_head_must_also_beat_the_serving_head_on_labels_it_never_saw() -> None:
    base, labels = _toy(90, base_right=False)
    first = learning.train(base, labels[:60])
    serving = adapt.AdaptedClassifier(base, first.head)
    trained_at = T0 + timedelta(minutes=1)
    later = [LabelledReply(r.reply_id, r.text, r.label, r.source, T0 + timedelta(minutes=2)) for r in labels[60:]]
    again = learning.train(base, labels[:60] + later, current=serving, current_trained_at=trained_at)
    f = again.figures
    assert f["n_fresh"] == 30 and f["current_fresh_macro_f1"] is not None
    assert again.switch == (
        f["head_macro_f1"] > f["base_macro_f1"] and f["head_fresh_macro_f1"] > f["current_fresh_macro_f1"]
    )
    assert not again.switch  # the serving head is already right on the new labels: nothing to gain

    wrong = adapt.PromptHead(first.head.labels, -first.head.weights, first.head.bias, base.version, 60)
    again = learning.train(
        base, labels[:60] + later, current=adapt.AdaptedClassifier(base, wrong), current_trained_at=trained_at
    )
    assert again.figures["current_fresh_macro_f1"] < again.figures["head_fresh_macro_f1"] and again.switch

    stale = learning.train(base, labels[:60], current=serving, current_trained_at=trained_at)
    assert stale.figures.get("n_fresh") is None and not stale.switch  # no label the serving head has not seen


def test_a_new_prompt_learns_on_the_base_that_serves_it(
    registry: ModelRegistry, new_prompt: tuple[Prompt, list[Example]]
) -> None:
    prompt, examples = new_prompt
    served = registry.classifier(prompt)
    base, current = learning.split_served(served)
    assert isinstance(base, StanceFeatures) and current is None
    assert base.version.split(":")[0] == ("general" if registry.general_model() else "similarity")
    scores, vectors = base.features(["phones should go in a locker all day", "eh"])
    assert scores.shape == (2, len(prompt.labels)) and vectors.shape[0] == 2 and vectors.shape[1] >= 32

    labelled = _labelled([ex for ex in examples if ex.label in prompt.label_names][:60])
    outcome = learning.train(base, labelled)
    f = outcome.figures
    assert f["n"] == 60 and 0.0 <= f["base_macro_f1"] <= 1.0 and 0.0 <= f["head_macro_f1"] <= 1.0
    assert outcome.switch == (f["head_macro_f1"] > f["base_macro_f1"])
    assert f["sources"] == {"declared": 60, "relabel": 0, "review": 0}
    adapted = adapt.AdaptedClassifier(base, outcome.head)
    assert adapted.version == f"{base.version}+{outcome.head.version}"
    held_out = [ex.text for ex in examples[60:70]]
    probs = adapted.probabilities(held_out)
    assert probs.shape == (10, len(prompt.labels)) and np.allclose(probs.sum(axis=1), 1.0)


async def test_the_service_serves_an_installed_head_and_each_result_names_its_model(
    registry: ModelRegistry, new_prompt: tuple[Prompt, list[Example]]
) -> None:
    prompt, examples = new_prompt
    catalog = PromptCatalog([])
    catalog.add(prompt, 5)
    service = StanceService(catalog, registry.classifier, max_wait_ms=5)
    try:
        before = await service.classify(prompt.id, examples[0].text, guild_id=5)
        served = await service.served(prompt.id, 5)
        assert before.model_version == served.version
        base, _ = learning.split_served(served)
        assert base is not None
        head = learning.train(base, _labelled(examples[:40])).head
        assert isinstance(served, GatedClassifier)
        service.install(prompt.id, 5, GatedClassifier(adapt.AdaptedClassifier(base, head)))
        after = await service.classify(prompt.id, examples[0].text, guild_id=5)
        assert after.model_version == f"{base.version}+{head.version}" == service.version(prompt.id, 5)
        assert after.model_version != before.model_version
    finally:
        await service.close()
