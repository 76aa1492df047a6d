"""Stance classifiers: the packaged encoder offline, the similarity baseline on obvious replies, the gate, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bot.core.encoder import PACKAGED_MODEL, SentenceEncoder
from bot.core.language import detect_non_english
from bot.core.prompts import UNCLEAR, PromptCatalog, prompt_from_dict
from bot.core.registry import ModelRegistry
from bot.core.stance import GatedClassifier, SimilarityClassifier, unsupported_language
from bot.core.trained import HeadClassifier, load_if_present

# Replies whose stance nobody would argue about, written for this test (not in the training data).
OBVIOUS = {
    "alliance": [
        ("Japan gets free protection and America pays the bill. Totally one-sided.", "unfair"),
        ("The US defends Japan but Japan would never defend the US, that's not fair to Americans.", "unfair"),
        ("Tokyo should pay way more for the troops we station there.", "unfair"),
        ("Japan already pays billions every year for the U.S. bases, the deal is balanced.", "fair"),
        ("Japan covers most of the cost of hosting American troops, so calling it unfair is wrong.", "fair"),
        ("Both countries win: America gets bases in Asia and Japan gets security.", "mutual_benefit"),
        ("The alliance keeps the whole region stable, which helps the US as much as Japan.", "mutual_benefit"),
        ("The US needs those bases to project power against China, it's good for both sides.", "mutual_benefit"),
        ("What time does the stream start?", "unclear"),
        ("anyone know a good ramen place in Osaka?", "unclear"),
    ],
    "defense": [
        ("Japan must raise its defense budget and build more ships and missiles.", "increase_defense"),
        ("Spend 2% of GDP on the military, Japan has to be able to defend itself.", "increase_defense"),
        ("Japan should build up its own forces instead of relying on others.", "increase_defense"),
        ("Japan should sign security pacts with India and Australia.", "new_alliances"),
        ("More partners like the Philippines and the Quad is smarter than relying on one ally.", "new_alliances"),
        ("Deepen ties with India, diversify Japan's security partnerships.", "new_alliances"),
        ("Who wrote this article?", "unclear"),
        ("nice read", "unclear"),
        ("what's everyone having for dinner tonight?", "unclear"),
        ("Is there a link to the original article?", "unclear"),
    ],
}


def test_packaged_encoder_loads_offline_and_embeds(encoder: SentenceEncoder) -> None:
    assert encoder.name == PACKAGED_MODEL
    vectors = encoder.encode(["Japan pays its share.", "What time is the stream?"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("prompt_id", sorted(OBVIOUS))
def test_similarity_labels_obvious_replies(encoder: SentenceEncoder, catalog: PromptCatalog, prompt_id: str) -> None:
    model = SimilarityClassifier(catalog.get(prompt_id), encoder)
    texts, gold = zip(*OBVIOUS[prompt_id], strict=True)
    results = model.classify(list(texts))
    accuracy = sum(r.label == g for r, g in zip(results, gold, strict=True)) / len(gold)
    assert accuracy >= 0.8, [(t, r.label) for t, r in zip(texts, results, strict=True)]
    assert model.version.startswith(f"similarity:{PACKAGED_MODEL}:")


@pytest.fixture(scope="module")
def gated(encoder: SentenceEncoder, catalog: PromptCatalog) -> GatedClassifier:
    return GatedClassifier(SimilarityClassifier(catalog.get("alliance"), encoder))


def test_gate_answers_what_the_model_cannot_judge(gated: GatedClassifier) -> None:
    texts = [
        "",
        "   ",
        "🔥🔥🔥 💯",
        "日米同盟はアメリカにとっても重要だと思う",
        "Japan zahlt viel zu wenig für den Schutz, ehrlich.",
    ]
    results = gated.classify(texts)
    assert [r.label for r in results] == [UNCLEAR] * len(texts)
    assert all(r.reason for r in results)
    assert results[0].reason == "empty reply"
    assert "emoji" in (results[2].reason or "")
    assert (results[3].reason or "").startswith("language: Japanese")
    assert (results[4].reason or "").startswith("language: German")


def test_gate_handles_a_20000_character_reply(gated: GatedClassifier) -> None:
    long = "Japan pays billions for the bases, so the deal is balanced. " * 340
    assert len(long) > 20_000
    (result,) = gated.classify([long])
    assert result.label in gated.inner.labels  # type: ignore[attr-defined]
    assert 0.0 <= result.confidence <= 1.0
    assert result.label != UNCLEAR or result.reason


def test_gate_keeps_order_and_mixes_gated_and_scored(gated: GatedClassifier) -> None:
    texts = ["", "Both countries benefit from the bases.", "👍", "Japan pays its share, it's fair."]
    results = gated.classify(texts)
    assert len(results) == 4
    assert results[0].reason == "empty reply"
    assert results[2].reason is not None
    assert results[1].label != UNCLEAR or (results[1].reason or "").startswith("low confidence")


@pytest.mark.parametrize(
    "text",
    [
        "Ishiba and Kishida both said Japan pays its share.",
        "Japón, Deutschland, whatever, Japan should pay more.",
        "lol",
        "The Self-Defense Forces (自衛隊) are already big.",
        "c'mon, the US gets a lot out of it",
        "non-binding, non-exclusive, non-sense",
    ],
)
def test_language_check_keeps_english(text: str) -> None:
    assert unsupported_language(text) is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Les deux pays y gagnent, c'est une alliance utile pour la stabilité.", "French"),
        ("Japón debería pagar mucho más por su defensa.", "Spanish"),
        ("日本はもっと負担すべきだよ", "CJK script (Japanese, Chinese or Korean)"),
        ("미국만 일본을 지켜야 하는 구조는 불공평하죠.", "CJK script (Japanese, Chinese or Korean)"),
        ("Япония должна платить больше.", "a non-Latin script"),
    ],
)
def test_language_check_flags_other_languages(text: str, language: str) -> None:
    assert detect_non_english(text) == language


def _fake_model(folder: Path, labels: list[str], encoder: SentenceEncoder) -> None:
    n = len(labels)
    model = HeadClassifier(
        encoder, labels, np.zeros((n, encoder.dim)), np.zeros(n), threshold=0.4, version="head:test:0:0"
    )
    model.save(folder, {"prompt": "x"})


def test_load_if_present_ignores_a_model_for_other_labels(
    tmp_path: Path, encoder: SentenceEncoder, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("alliance")
    _fake_model(tmp_path / "alliance", ["unfair", "fair", UNCLEAR], encoder)  # one label short
    assert load_if_present(tmp_path / "alliance", prompt, encoder) is None
    classifier = ModelRegistry(encoder, build_dir=tmp_path).classifier(prompt)
    assert classifier.version.startswith("similarity:")


def test_load_if_present_loads_a_matching_model_and_ignores_broken_ones(
    tmp_path: Path, encoder: SentenceEncoder, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("alliance")
    folder = tmp_path / "alliance"
    assert load_if_present(folder, prompt, encoder) is None  # nothing there
    _fake_model(folder, list(prompt.label_names), encoder)
    model = load_if_present(folder, prompt, encoder)
    assert model is not None and model.version == "head:test:0:0" and model.threshold == 0.4
    assert ModelRegistry(encoder, build_dir=tmp_path).classifier(prompt).version == "head:test:0:0"
    (folder / "model.json").write_text("{not json", encoding="utf-8")
    assert load_if_present(folder, prompt, encoder) is None
    meta = {"labels": list(prompt.label_names), "format": 2, "kind": "finetuned", "threshold": 0.5, "version": "v"}
    (folder / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    assert load_if_present(folder, prompt, encoder) is None  # no encoder/ folder: falls back, no exception


def test_a_new_prompt_classifies_with_similarity(encoder: SentenceEncoder, tmp_path: Path) -> None:
    prompt = prompt_from_dict(
        {
            "id": "energy",
            "title": "Nuclear power?",
            "question": "Should Japan restart its nuclear plants?",
            "summary": "Japan weighs restarting reactors.",
            "labels": [
                {"name": "restart", "description": "Restart the reactors.", "examples": ["Turn the plants back on."]},
                {"name": "phase_out", "description": "Close the reactors for good.", "examples": ["Shut them all."]},
            ],
        }
    )
    classifier = ModelRegistry(encoder, build_dir=tmp_path, threshold=0.0).classifier(prompt)
    (result,) = classifier.classify(["Japan should restart the nuclear reactors now."])
    assert result.label == "restart"
