"""The general model's inputs and the per-prompt heads that learn from a server's labels (numpy, no torch)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bot.assets import data_dir, shipped_models_dir
from bot.config import Settings, model_registry
from bot.core import adapt
from bot.core import general as general_module
from bot.core.datasets import load_jsonl
from bot.core.encoder import SentenceEncoder
from bot.core.general import Choices, GeneralModel, InputBuilder, label_text
from bot.core.prompts import load_prompt, prompt_from_dict
from bot.core.scoring import macro_f1
from bot.core.stance import GatedClassifier

TOKENIZER = shipped_models_dir() / "tokenizer" / "tokenizer.json"
HELD_OUT = data_dir() / "general" / "phones_in_school"  # a test prompt of the general model: never trained on


def test_a_reply_is_read_with_the_question_after_it_and_pooled_over_its_own_tokens() -> None:
    builder = InputBuilder(TOKENIZER)
    feed = builder.build(["short reply", "a somewhat longer reply here", ""], "Ban it?")
    ids, mask, pool = feed["input_ids"], feed["attention_mask"], feed["pool_mask"]
    assert ids.shape == mask.shape == pool.shape and ids.shape[0] == 3
    question = builder.pieces(["Ban it?"])[0]
    for row, text in enumerate(["short reply", "a somewhat longer reply here", ""]):
        n = int(mask[row].sum())
        assert ids[row, 0] == builder.cls and ids[row, n - 1] == builder.sep
        assert (ids[row, n:] == builder.pad).all()
        assert ids[row, n - 1 - len(question) : n - 1].tolist() == question  # the question comes last
        pooled = ids[row][pool[row] > 0].tolist()
        if text:
            assert builder.tokenizer.decode(pooled) == text  # only the reply's own tokens are pooled
        else:
            assert pooled == [builder.sep]  # an empty reply still pools something
    labels = builder.build(["ban: Ban it."])  # a label text alone: no context part
    assert builder.tokenizer.decode(labels["input_ids"][0][labels["pool_mask"][0] > 0].tolist()) == "ban : ban it."


def test_long_parts_are_cut_to_their_budget() -> None:
    builder = InputBuilder(TOKENIZER)
    feed = builder.build(["word " * 1000], "why " * 200)
    assert feed["input_ids"].shape[1] == 1 + 96 + 1 + 40 + 1
    assert feed["pool_mask"].sum() == 96
    assert builder.build(["word " * 1000], budget=64)["input_ids"].shape[1] == 1 + 64 + 1


def test_choices_carry_each_labels_examples() -> None:
    prompt = prompt_from_dict(
        {"id": "x1", "title": "t", "question": "q?", "summary": "s",
         "labels": [{"name": "yes_please", "description": "Yes.", "examples": ["sure", "ok"]},
                    {"name": "no", "description": "No."}]}
    )  # fmt: skip
    choices = Choices.of(prompt)
    assert choices.texts[0] == label_text("yes_please", "Yes.") == "yes please: Yes."
    assert choices.example_sets() == (("sure", "ok"), ("no: No.",), ("unclear: " + prompt.labels[-1].description,))
    assert choices.flat_examples() == (
        ["sure", "ok", "no: No.", "unclear: " + prompt.labels[-1].description],
        [2, 1, 1],
    )


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


@pytest.fixture(scope="module")
def general(encoder: SentenceEncoder) -> GeneralModel:
    found = model_registry(Settings(), encoder=encoder).general_model()
    assert found is not None, "models/shipped holds no general model (stancebot train --general --ship models/shipped)"
    return found


def test_the_shipped_general_model_reads_a_prompt_it_never_trained_on(general: GeneralModel) -> None:
    prompt = load_prompt(HELD_OUT.with_suffix(".toml"))
    examples = load_jsonl(HELD_OUT.with_suffix(".jsonl"))
    results = GatedClassifier(general.for_prompt(prompt)).classify([ex.text for ex in examples])
    names = prompt.label_names
    score = macro_f1([names.index(ex.label) for ex in examples], [names.index(r.label) for r in results], len(names))
    assert score > 0.6  # the similarity baseline reads this prompt at about 0.5; chance is about 0.3
    assert general.for_prompt(prompt).version.startswith(f"general:{general.version}:")


def test_label_order_does_not_change_what_the_general_model_says(general: GeneralModel) -> None:
    prompt = load_prompt(HELD_OUT.with_suffix(".toml"))
    texts = [ex.text for ex in load_jsonl(HELD_OUT.with_suffix(".jsonl"))[:40]]
    flipped = replace(prompt, labels=tuple(reversed(prompt.labels)))
    a, _ = general.for_prompt(prompt).features(texts)
    b, vectors = general.for_prompt(flipped).features(texts)
    assert np.allclose(a, b[:, ::-1], atol=1e-4)  # the scorer is one function of a label's vectors, not its slot
    assert vectors.shape == (40, general.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def test_a_two_label_prompt_and_a_five_label_prompt_run_through_the_same_graph(general: GeneralModel) -> None:
    two = prompt_from_dict(
        {"id": "pizza2", "title": "t", "question": "Does pineapple belong on pizza?", "summary": "s",
         "labels": [{"name": "yes", "description": "Pineapple belongs on pizza."}]}
    )  # fmt: skip
    five = prompt_from_dict(
        {"id": "city5", "title": "t", "question": "What should the city build on the empty lot?", "summary": "s",
         "labels": [{"name": "park", "description": "A park.", "examples": ["trees please"]},
                    {"name": "housing", "description": "Housing."}, {"name": "parking", "description": "A car park."},
                    {"name": "library", "description": "A library."}]}
    )  # fmt: skip
    for prompt in (two, five):
        scores, _ = general.for_prompt(prompt).features(["", "build more homes, rents are insane", "🍍🍕"])
        assert scores.shape == (3, len(prompt.labels)) and np.isfinite(scores).all()
    assert general.for_prompt(five).classify(["build more homes, rents are insane"])[0].label == "housing"


def test_label_vectors_are_kept_for_the_prompts_used_last_only(
    general: GeneralModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(general_module, "LABEL_CACHE", 2)
    general._labels.clear()
    versions = [
        Choices.of(prompt_from_dict(
            {"id": f"p{i}", "title": "t", "question": "Ban it?", "summary": "s",
             "labels": [{"name": "ban", "description": f"Ban it, take {i}."}]}
        ))
        for i in range(3)
    ]  # fmt: skip
    first = general.label_vectors(versions[0])["label_descriptions"]
    general.label_vectors(versions[1])
    general.label_vectors(versions[0])  # used again: now the most recent
    general.label_vectors(versions[2])  # the third: evicts the least recently used (versions[1])
    assert list(general._labels) == [versions[0], versions[2]]
    assert np.array_equal(general.label_vectors(versions[0])["label_descriptions"], first)


def _write_prompt(folder: Path, prompt_id: str, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prompt_id}.toml").write_text(
        f'id = "{prompt_id}"\ntitle = "t"\nquestion = "Q?"\nsummary = "s"\n'
        '[[labels]]\nname = "yes"\ndescription = "Yes."\n[[labels]]\nname = "no"\ndescription = "No."\n',
        encoding="utf-8",
    )
    lines = [json.dumps({"text": t, "label": label, "prompt": prompt_id}) for t, label in rows]
    (folder / f"{prompt_id}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_real_statement_paraphrases_join_train_prompts_only(tmp_path: Path) -> None:
    from bot.core.general_training import load_general

    for prompt_id in ("trained", "heldout"):
        _write_prompt(tmp_path, prompt_id, [("sure", "yes"), ("nope", "no")])
        _write_prompt(tmp_path / "realtrain", prompt_id, [("a senator argued yes", "yes")])
    (tmp_path / "splits.toml").write_text('test = ["heldout"]\ndev = []\n', encoding="utf-8")
    found = {pd.prompt.id: pd for pd in load_general(tmp_path)}
    assert [ex.text for ex in found["trained"].examples] == ["sure", "nope", "a senator argued yes"]
    assert [ex.text for ex in found["heldout"].examples] == ["sure", "nope"]  # a test prompt stays as written
    assert found["heldout"].role == "test" and found["trained"].role == "train"
