"""``stancebot train --multilingual``: the heads that read replies in other languages (seconds, numpy and
scikit-learn only)."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.cli.common import fail
from bot.config import Settings

if TYPE_CHECKING:
    from bot.core.prompts import Prompt
    from bot.core.stance import GatedClassifier


def train_multilingual_command(
    settings: Settings, prompt_ids: tuple[str, ...], all_prompts: bool, out: Path | None, ship_dir: Path | None
) -> None:
    """Train each named prompt's multilingual head (or every prompt with Japanese data) and ship it into
    ``--ship`` (default: OUT/shipped, which the bot prefers to the packaged heads); prints a JSON summary."""
    from bot.core import datasets
    from bot.core.multilingual_training import train_all
    from bot.core.prompts import PromptCatalog

    if importlib.util.find_spec("sklearn") is None:
        fail("training the multilingual heads needs scikit-learn: pip install 'stancebot[train]'")
    catalog = PromptCatalog.from_dir(settings.prompts_dir())
    if all_prompts:
        prompts = [p for p in catalog if (datasets.JA_SPLITS_DIR / p.id / "train.jsonl").is_file()]
    elif prompt_ids:
        prompts = [catalog.get(pid) for pid in prompt_ids]
    else:
        raise click.UsageError("Name a prompt with --prompt NAME, or use --all.")
    build = out or settings.path(settings.model.build_dir)
    started = time.perf_counter()
    summary = train_all(prompts, ship_dir or build / "shipped")
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    click.echo(json.dumps(summary, indent=2))


def japanese_figures(gated: GatedClassifier, prompt: Prompt, *, speed: bool) -> dict[str, Any]:
    """``stancebot evaluate``'s Japanese section: the bot's path (the multilingual head when shipped) on the
    Japanese dev and test splits."""
    from bot.core import datasets
    from bot.core.evaluation import evaluate_other_language

    out: dict[str, Any] = {}
    for split in ("dev", "test"):
        examples = datasets.load_split(prompt, split, root=datasets.JA_SPLITS_DIR)
        if examples:
            out[split] = evaluate_other_language(gated, examples, prompt.label_names, speed=speed and split == "test")
    return out
