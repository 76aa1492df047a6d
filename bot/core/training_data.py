"""What a prompt's model trains and is chosen on: the committed splits, extra labelled replies, the
prompt's own examples, and unlabelled texts for distillation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.core.datasets import (
    REALTRAIN_DIR,
    SEED,
    SPLITS_DIR,
    DataError,
    Example,
    dedupe_key,
    for_prompt,
    has_splits,
    load_jsonl,
    load_real,
    load_split,
    split_examples,
)
from bot.core.prompts import Prompt

log = logging.getLogger(__name__)


def fewshot_examples(prompt: Prompt) -> list[Example]:
    """The prompt's own label descriptions and examples as labelled replies (what a new prompt starts with)."""
    return [
        Example(text, label.name, prompt.id, "prompt")
        for label in prompt.labels
        for text in (label.description, *label.examples)
    ]


def committed_test_split(prompt: Prompt) -> list[Example]:
    """The prompt's committed test split if it has one (only to keep its texts out of training), else nothing."""
    return load_split(prompt, "test") if has_splits(prompt.id) else []


def realtrain_file(prompt: Prompt, folder: Path = REALTRAIN_DIR) -> Path | None:
    """The prompt's first file of training paraphrases of real public statements in ``folder``, if it has any."""
    path = folder / f"{prompt.id}.jsonl"
    return path if path.is_file() else None


def realtrain_files(prompt: Prompt, folder: Path = REALTRAIN_DIR) -> list[Path]:
    """Every file of the prompt's training paraphrases in ``folder`` (the seed prompts' by default; the general
    model's prompts have their own): ``<prompt>.jsonl`` then ``<prompt>.*.jsonl`` (later batches, e.g.
    ``<prompt>.more.jsonl``), sorted; empty when it has none."""
    first = realtrain_file(prompt, folder)
    later = sorted(p for p in folder.glob(f"{prompt.id}.*.jsonl") if p.is_file())
    return [first, *later] if first is not None else later


def training_data(
    prompt: Prompt, *, data: Sequence[Example] | None = None, extra_files: Sequence[Path] = (), seed: int = SEED
) -> tuple[list[Example], list[Example]]:
    """``(train, dev)`` for a prompt.

    Train is ``data`` when given, else the committed train split; replies from ``extra_files`` (e.g. moderator
    corrections) are added, except those also in dev, test or the real-world sets (no leak). Dev is the committed
    dev split; a prompt without splits has 20% of its data held out as dev instead.
    """
    extra: list[Example] = []
    for path in extra_files:
        extra += for_prompt(load_jsonl(path), prompt, where=str(path))
    if has_splits(prompt.id):
        train = list(data) if data is not None else load_split(prompt, "train")
        dev = load_split(prompt, "dev")
        evaluation = [
            *dev,
            *load_split(prompt, "test"),
            *load_real(prompt, "real-dev"),
            *load_real(prompt, "real-test"),
        ]
        held = {dedupe_key(ex.text) for ex in evaluation}
        kept = [ex for ex in extra if dedupe_key(ex.text) not in held]
        if len(kept) < len(extra):
            log.warning(
                "%d extra replies are in the dev/test splits and were left out of training", len(extra) - len(kept)
            )
        return for_prompt(train, prompt) + kept, dev
    pool = for_prompt(list(data or []) + extra, prompt)
    if len(pool) < 10:
        raise DataError(
            f"Prompt {prompt.id!r} has no committed splits and only {len(pool)} labelled replies; "
            "pass labelled replies with --data (it keeps the similarity model until then)."
        )
    parts = split_examples(pool, seed=seed, dev=0.2, test=0.0, min_hard_test=0)
    return parts["train"], parts["dev"]


# ---------------------------------------------------------------------------------------------------------------


def labels_of(examples: Sequence[Example], names: Sequence[str]) -> np.ndarray:
    """The label indices (in ``names`` order) of ``examples``."""
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[ex.label] for ex in examples], dtype=np.int64)


def unlabelled_texts(prompt: Prompt, held_out: Sequence[Example], root: Path = SPLITS_DIR) -> list[str]:
    """Texts for distillation without labels: the other prompts' committed train splits (replies on neighbouring
    questions), minus anything in ``held_out`` (this prompt's dev and test)."""
    held = {dedupe_key(ex.text) for ex in held_out}
    out: list[str] = []
    for path in sorted(root.glob("*/train.jsonl")):
        if path.parent.name == prompt.id:
            continue
        out += [ex.text for ex in load_jsonl(path) if dedupe_key(ex.text) not in held]
    return out
