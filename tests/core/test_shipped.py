"""The shipped models: laid out with a manifest, loaded without torch, refused by name when a file is damaged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.assets import shipped_models_dir
from bot.config import load_settings, model_registry
from bot.core.prompts import PromptCatalog
from bot.core.shipped import (
    BASE_ENCODER,
    MANIFEST,
    WEIGHTS,
    ModelIntegrityError,
    ModelLibrary,
    ModelStore,
    sha256_file,
)

SHIPPED = shipped_models_dir()


def settings_for(build_dir: Path, **extra: str):  # type: ignore[no-untyped-def]
    """Settings whose local model folder is ``build_dir/shipped`` (searched before the packaged models)."""
    return load_settings(None, environ={"STANCEBOT_MODEL_BUILD_DIR": str(build_dir), **extra})


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    """A copy of the shipped models in ``tmp/build/shipped`` (the bot prefers it to the packaged ones)."""
    target = tmp_path / "build" / "shipped"
    shutil.copytree(SHIPPED, target)
    return target


def test_every_shipped_file_matches_the_manifest_and_each_seed_prompt_has_a_model(catalog: PromptCatalog) -> None:
    store = ModelStore(SHIPPED)
    assert store.problems() == []
    assert BASE_ENCODER in store.names
    for prompt in catalog:
        entry = store.entry(prompt.id)
        assert sorted(entry.labels) == sorted(prompt.label_names)
        assert entry.config["kind"] == "distilled"
        assert 0.0 <= float(entry.config["threshold"]) <= 1.0
        recipe = store.manifest["models"][prompt.id]["recipe"]
        assert recipe["command"].startswith(f"stancebot train --prompt {prompt.id}")
        assert store.manifest["models"][prompt.id]["data_hash"]
    # one shared tokenizer, one weights file a model
    onnx_files = sorted(p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*.onnx"))
    assert onnx_files == sorted(f"{name}/{WEIGHTS}" for name in store.names if not name.startswith("multilingual-"))
    assert sorted(p.name for p in store.tokenizer_dir.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]


def test_the_registry_serves_the_shipped_models_on_onnx_runtime_without_torch(
    tmp_path: Path, catalog: PromptCatalog
) -> None:
    code = (
        "import sys\n"
        "from bot.config import load_settings, model_registry\n"
        "from bot.core.prompts import PromptCatalog\n"
        "s = load_settings(None, environ={'STANCEBOT_MODEL_BUILD_DIR': sys.argv[1]})\n"
        "reg = model_registry(s)\n"
        "cat = PromptCatalog.from_dir(s.prompts_dir())\n"
        "clf = reg.classifier(cat.get('alliance'))\n"
        "print(clf.version, clf.classify(['Japan should pay way more, we protect them for free'])[0].label)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    version, label = out[0].split()
    assert version == ModelStore(SHIPPED).entry("alliance").version
    assert label == "unfair"
    assert out[1] == "[]"  # neither torch nor transformers was imported


def test_a_changed_byte_in_a_model_file_stops_the_start_naming_the_file(copied: Path) -> None:
    weights = copied / "alliance" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"alliance/model\.onnx: checksum does not match"):
        model_registry(settings_for(copied.parent))


def test_a_truncated_model_file_is_refused_with_its_size(copied: Path) -> None:
    weights = copied / "defense" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelIntegrityError, match=r"defense/model\.onnx: 1000 bytes, the manifest says"):
        ModelLibrary([copied]).verify()


def test_a_missing_or_unreadable_manifest_is_a_clear_error(copied: Path) -> None:
    (copied / MANIFEST).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match=r"manifest\.json cannot be read"):
        ModelStore(copied)
    (copied / MANIFEST).write_text(json.dumps({"format": 99}), encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="not a model manifest of format 1"):
        ModelStore(copied)


def test_stancebot_models_verify_lists_files_and_exits_non_zero_on_a_bad_one(copied: Path) -> None:
    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "models", "verify", "--dir", str(copied)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    good = verify()
    assert good.returncode == 0, good.stderr
    assert f"ok   {copied / 'alliance' / WEIGHTS}" in good.stdout
    assert "0 bad" in good.stderr
    config = copied / "defense" / "config.json"
    config.write_text(config.read_text(encoding="utf-8").replace('"threshold"', '"threshold" '), encoding="utf-8")
    bad = verify()
    assert bad.returncode == 1
    assert f"BAD  {config}:" in bad.stdout
    assert "1 bad" in bad.stderr


def test_a_local_build_is_preferred_to_the_shipped_model_and_label_mismatches_are_skipped(
    copied: Path, catalog: PromptCatalog
) -> None:
    library = ModelLibrary([copied, SHIPPED])
    found = library.find("alliance", catalog.get("alliance").label_names)
    assert found is not None and found[0].root == copied
    assert library.find("alliance", ["yes", "no", "unclear"]) is None


def test_shipped_logits_match_the_head_applied_to_the_embedding_output(catalog: PromptCatalog, tmp_path: Path) -> None:
    registry = model_registry(settings_for(tmp_path))
    model = registry.trained_model(catalog.get("defense"))
    assert model is not None and model.weights is None  # the head is inside the ONNX graph
    texts = ["Japan should build up its own forces", "India and Australia are the partners to court"]
    probs = model.probabilities(texts)
    assert probs.shape == (2, 3)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert sha256_file(model.encoder.onnx_path) == ModelStore(SHIPPED).manifest["files"]["defense/model.onnx"]["sha256"]
