"""The general model's inputs and the per-prompt heads that learn from a server's labels (numpy, no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.assets import shipped_models_dir
from bot.core import adapt
from bot.core.general import Choices, InputBuilder, label_text
from bot.core.prompts import prompt_from_dict

TOKENIZER = shipped_models_dir() / "tokenizer" / "tokenizer.json"


def test_inputs_put_the_reply_question_and_each_label_in_their_own_segments() -> None:
    builder = InputBuilder(TOKENIZER)
    two = Choices("Ban it?", ("ban", "unclear"), (label_text("ban", "Ban it."), "unclear: no stance"))
    three = Choices("Which?", ("a", "b", "unclear"), ("a: one", "b: two", "unclear: none"))
    feed, valid = builder.build(["short reply", "a somewhat longer reply here"], [two, three])
    ids, mask = feed["input_ids"], feed["attention_mask"]
    assert ids.shape == mask.shape and feed["label_mask"].shape == (2, 3, ids.shape[1])
    assert valid.tolist() == [[True, True, False], [True, True, True]]  # a two-label prompt pads its third slot
    assert (feed["label_mask"][0, 2] == 0).all()
    for row in range(2):
        n = int(mask[row].sum())
        assert ids[row, 0] == builder.cls and ids[row, n - 1] == builder.sep
        assert (ids[row, n:] == builder.pad).all()
        # segments never overlap, and the reply segment comes first
        owners = feed["label_mask"][row].sum(axis=0) + feed["reply_mask"][row]
        assert owners.max() == 1.0
        first_label = int(np.argmax(feed["label_mask"][row, 0]))
        assert np.flatnonzero(feed["reply_mask"][row]).max() < first_label
    words = builder.tokenizer.decode(ids[0][feed["label_mask"][0, 0] > 0].tolist())
    assert words == "ban : ban it."


def test_long_parts_are_cut_to_their_budget() -> None:
    builder = InputBuilder(TOKENIZER)
    choice = Choices("why " * 200, ("x", "unclear"), ("x: " + "very " * 200, "unclear: none"))
    feed, _ = builder.build(["word " * 1000], [choice])
    assert feed["input_ids"].shape[1] <= 1 + 96 + 1 + 40 + 1 + 40 + 1 + 40 + 1


def test_a_head_fit_on_labels_centred_on_the_general_model() -> None:
    rng = np.random.default_rng(0)
    n, k = 120, 3
    y = rng.integers(0, k, n)
    # the "general model" is right 50% of the time; the vector carries the true label
    scores = rng.normal(size=(n, k))
    scores[np.arange(n) // 2 * 2 == np.arange(n), y[np.arange(n) // 2 * 2 == np.arange(n)]] += 3
    vectors = rng.normal(scale=0.1, size=(n, 8))
    vectors[np.arange(n), y] += 1.0
    x = adapt.design(scores, vectors, 1.0)
    w0, b0 = adapt.fit(x[:0], y[:0], k, steps=1)  # no labels: the prior head copies the general model
    assert np.array_equal((x @ w0.T + b0).argmax(1), scores.argmax(1))
    w, b = adapt.fit(x, y, k)
    assert ((x @ w.T + b).argmax(1) == y).mean() > 0.9
    assert ((x @ w0.T + b0).argmax(1) == y).mean() < 0.8


def test_a_prompt_head_round_trips_through_json() -> None:
    head = adapt.PromptHead(("a", "b", "unclear"), np.arange(6.0).reshape(3, 2), np.zeros(3), "L3:abc", 40, {"n": 40})
    again = adapt.PromptHead.from_json(head.to_json())
    assert again.labels == head.labels and np.allclose(again.weights, head.weights)
    assert again.version == head.version and again.figures == {"n": 40}


def test_a_head_refuses_a_prompt_whose_labels_changed() -> None:
    prompt = prompt_from_dict(
        {"id": "x1", "title": "t", "question": "q?", "summary": "s",
         "labels": [{"name": "yes", "description": "Yes."}, {"name": "no", "description": "No."}]}
    )  # fmt: skip

    class Fake:
        labels = prompt.label_names
        threshold = 0.5
        version = "general:v"

    head = adapt.PromptHead(("yes", "unclear"), np.zeros((2, 2)), np.zeros(2), "v", 30)
    with pytest.raises(ValueError, match="other labels"):
        adapt.AdaptedClassifier(Fake(), head)  # type: ignore[arg-type]
