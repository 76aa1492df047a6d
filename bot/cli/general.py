"""The general model on the command line: ``stancebot train --general``, ``stancebot train --prompt-file``,
``stancebot evaluate --general`` and ``stancebot evaluate --prompt-file`` (called from :mod:`bot.cli_model`)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from bot.config import Settings, model_registry
from bot.core import adapt, learning
from bot.core.datasets import DataError, Example, for_prompt, load_jsonl
from bot.core.files import write_text_atomic
from bot.core.general import GeneralClassifier
from bot.core.prompts import Prompt, load_prompt
from bot.core.registry import ModelRegistry
from bot.core.stance import GatedClassifier, SimilarityClassifier, StanceFeatures

#: Labelled replies per prompt in the "learning from the server" simulation of ``evaluate --general``.
SIMULATED_LABELS = 40
SIMULATION_DRAWS = 3
HEAD_FILE = "head.json"


def general_classifier(registry: ModelRegistry, prompt: Prompt) -> GeneralClassifier:
    """The general model for ``prompt``; a clear error when no general model is shipped or built."""
    model = registry.general_model()
    if model is None:
        raise DataError("No general model: train one with `stancebot train --general` (needs the train extra).")
    return model.for_prompt(prompt)


def prompt_base(registry: ModelRegistry, prompt: Prompt) -> StanceFeatures:
    """The model a prompt's head learns on, as in the bot: the general model when one is shipped or built, else the
    similarity model; a clear error for a prompt that has its own trained model (a seed prompt's id)."""
    base, _ = learning.split_served(registry.classifier(prompt))
    if base is None:
        raise DataError(
            f"Prompt {prompt.id!r} has its own trained model; a head learns on the general or similarity model."
        )
    return base


def prompt_and_data(prompt_file: Path, data_file: Path) -> tuple[Prompt, list[Example]]:
    """A prompt defined outside the catalog and its labelled replies (checked against its labels)."""
    prompt = load_prompt(prompt_file)
    examples = for_prompt(load_jsonl(data_file), prompt, where=str(data_file))
    if not examples:
        raise DataError(f"{data_file} holds no labelled replies for prompt {prompt.id!r}.")
    return prompt, examples


def train_general_command(settings: Settings, out: Path | None, ship_dir: Path | None, epochs: int | None) -> None:
    """``stancebot train --general``: train on every prompt of models/data/general plus the seed prompts."""
    from dataclasses import replace

    from bot.core.general_training import GeneralConfig, export_general, load_general, seed_prompts, train_general
    from bot.core.prompts import PromptCatalog

    build = out or settings.path(settings.model.build_dir)
    ship_root = ship_dir or build / "shipped"
    cfg = GeneralConfig() if epochs is None else replace(GeneralConfig(), epochs=epochs)
    data = load_general() + seed_prompts(list(PromptCatalog.from_dir(settings.prompts_dir())), cfg.seed_prompt_cap, 13)
    click.echo(f"Training the general model on {sum(p.role == 'train' for p in data)} prompts…", err=True)
    started = time.perf_counter()
    meta = train_general(data, build / "general", config=cfg)
    folder = export_general(build / "general", ship_root)
    meta["shipped"] = str(folder)
    meta["total_seconds"] = round(time.perf_counter() - started, 1)
    click.echo(json.dumps({k: v for k, v in meta.items() if k != "history"} | {"history": meta["history"]}, indent=2))


def train_prompt_file_command(settings: Settings, prompt_file: Path, data_file: Path, out: Path) -> None:
    """``stancebot train --prompt-file F --data LABELS --out DIR``: the head the bot trains in the background."""
    prompt, examples = prompt_and_data(prompt_file, data_file)
    base = prompt_base(model_registry(settings), prompt)
    started = time.perf_counter()
    head, figures = adapt.compare(base, [ex.text for ex in examples], [ex.label for ex in examples])
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / HEAD_FILE, head.to_json())
    write_text_atomic(out / "prompt.toml", prompt_file.read_text(encoding="utf-8"))
    result = {
        "prompt": prompt.id,
        "base": base.version,
        "head": head.version,
        **figures,
        "seconds": round(time.perf_counter() - started, 2),
    }
    click.echo(json.dumps(result | {"folder": str(out)}, indent=2))


def load_head(folder: Path, base: StanceFeatures) -> adapt.AdaptedClassifier:
    """The head written by ``train --prompt-file`` in ``folder``, on the model it was trained on."""
    path = folder / HEAD_FILE
    try:
        head = adapt.PromptHead.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path} is not a prompt head written by `stancebot train --prompt-file` ({exc}).") from None
    if head.base_version != base.version:
        raise DataError(f"{path} was trained on {head.base_version}, not on {base.version}; train it again.")
    return adapt.AdaptedClassifier(base, head)


def stratified_draw(examples: Sequence[Example], n: int, seed: int) -> tuple[list[Example], list[Example]]:
    """``n`` replies drawn with every label represented as evenly as the data allows, and the rest."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_label.setdefault(ex.label, []).append(i)
    for idx in by_label.values():
        rng.shuffle(idx)
    chosen: list[int] = []
    while len(chosen) < min(n, len(examples)):
        for idx in by_label.values():
            if idx and len(chosen) < n:
                chosen.append(idx.pop())
    picked = set(chosen)
    return [examples[i] for i in chosen], [ex for i, ex in enumerate(examples) if i not in picked]


def evaluate_general_command(settings: Settings, *, role: str = "test", real: bool = False) -> dict[str, Any]:
    """``stancebot evaluate --general``: each held-out prompt with the general model, the similarity baseline, and
    the general model plus a head learned from 40 of its labelled replies (three draws; scored on the rest)."""
    from bot.core.evaluation import evaluate as run_evaluation
    from bot.core.general_training import load_general

    registry = model_registry(settings)
    prompts = [pd for pd in load_general() if pd.role == role]
    if real:
        prompts = [pd for pd in (_with_real(pd) for pd in prompts) if pd is not None]
    out: dict[str, Any] = {"role": role, "data": "real statements" if real else "team-written", "prompts": {}}
    for pd in prompts:
        general = general_classifier(registry, pd.prompt)
        max_chars = settings.model.max_chars
        gen = run_evaluation(GatedClassifier(general, max_chars=max_chars), pd.examples, pd.prompt.label_names,
                             speed=False)  # fmt: skip
        sim = SimilarityClassifier(pd.prompt, registry.encoder, threshold=settings.model.unclear_threshold)
        base = run_evaluation(GatedClassifier(sim, max_chars=max_chars), pd.examples, pd.prompt.label_names,
                              speed=False)  # fmt: skip
        adapted = []
        for draw in range(SIMULATION_DRAWS):
            labelled, rest = stratified_draw(pd.examples, SIMULATED_LABELS, seed=draw)
            head, _ = adapt.compare(general, [ex.text for ex in labelled], [ex.label for ex in labelled])
            clf = GatedClassifier(adapt.AdaptedClassifier(general, head), max_chars=max_chars)
            adapted.append(run_evaluation(clf, rest, pd.prompt.label_names, speed=False)["macro_f1"])
        out["prompts"][pd.prompt.id] = {
            "n": len(pd.examples),
            "labels": len(pd.prompt.label_names),
            "general_macro_f1": gen["macro_f1"],
            "general_ece": gen["ece"],
            "similarity_macro_f1": base["macro_f1"],
            f"with_{SIMULATED_LABELS}_labels_macro_f1": round(float(np.mean(adapted)), 4),
            "per_label": gen["per_label"],
        }
    rows = out["prompts"].values()
    for key in ("general_macro_f1", "similarity_macro_f1", f"with_{SIMULATED_LABELS}_labels_macro_f1"):
        out[f"mean_{key}"] = round(float(np.mean([r[key] for r in rows])), 4) if rows else None
    return out


def _with_real(pd: Any) -> Any:
    """The prompt with its real-statement test set instead of its team-written replies, or ``None``."""
    from bot.core.general_training import GENERAL_DIR

    path = GENERAL_DIR / "real" / f"{pd.prompt.id}.jsonl"
    if not path.is_file():
        return None
    pd.examples = [ex for ex in for_prompt(load_jsonl(path), pd.prompt, where=str(path))]
    return pd
