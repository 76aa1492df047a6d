"""Model commands for the CLI: ``stancebot train`` and ``stancebot evaluate`` (registered in ``bot.__main__``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from bot.config import Settings, load_settings
from bot.core.errors import StancebotError

log = logging.getLogger("bot.model")

_config = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Settings file (default: ./config.toml if present, else built-in defaults).",
)


def _settings(config: Path | None) -> Settings:
    if config is None and Path("config.toml").is_file():
        config = Path("config.toml")
    try:
        settings = load_settings(config)
    except StancebotError as exc:
        click.echo(f"stancebot: {exc}", err=True)
        sys.exit(2)
    logging.basicConfig(
        level=settings.general.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return settings


def _fail(exc: Exception) -> None:
    click.echo(f"stancebot: {exc}", err=True)
    sys.exit(2)


@click.command()
@_config
@click.option("--prompt", "prompt_ids", multiple=True, help="Prompt id to train (repeatable).")
@click.option("--all", "all_prompts", is_flag=True, help="Train every prompt that has labelled data.")
@click.option(
    "--variant",
    type=click.Choice(["auto", "head", "finetune", "setfit", "small", "distil"]),
    default="auto",
    show_default=True,
    help="head: linear head on frozen embeddings (seconds); finetune: tune the encoder's top layers (minutes); "
    "setfit: contrastive tuning on label pairs, then the head (minutes); auto: those three, keep the best on dev; "
    "small: the head on the encoder's first --layers layers (faster inference, opt-in); distil: fine-tune, then "
    "distil it into a student of --layers layers (faster inference).",
)
@click.option(
    "--data",
    "data_files",
    multiple=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Extra labelled JSONL (text, label[, prompt]) added to the train split, e.g. moderator corrections.",
)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None, help="Build folder.")
@click.option(
    "--split",
    "make_split",
    is_flag=True,
    help="Only make the committed train/dev/test splits from models/data/<prompt>.jsonl, no training. Made once: "
    "later runs add the data file's new rows to train and dev; test never changes.",
)
@click.option("--force", is_flag=True, help="With --split: remake all three splits (changes what test means).")
@click.option(
    "--epochs", type=click.IntRange(1, 50), default=None, help="Fine-tuning epochs (default 6; best kept on dev)."
)
@click.option(
    "--layers",
    type=click.IntRange(1, 6),
    default=None,
    help="Encoder layers the small variant (default 2) or the distilled student (default 3) keeps.",
)
@click.option(
    "--teachers",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Fine-tuned teachers (different seeds) the distilled student learns from.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train(
    config: Path | None,
    prompt_ids: tuple[str, ...],
    all_prompts: bool,
    variant: str,
    data_files: tuple[Path, ...],
    out: Path | None,
    make_split: bool,
    force: bool,
    epochs: int | None,
    layers: int | None,
    teachers: int,
    no_progress: bool,
) -> None:
    """Train the stance model of a prompt (or --all) into models/build/<prompt>/."""
    settings = _settings(config)
    from bot.core import datasets
    from bot.core.prompts import PromptCatalog

    try:
        catalog = PromptCatalog.from_dir(settings.path(settings.prompts.dir))
        if all_prompts:
            prompts = [p for p in catalog if datasets.has_splits(p.id) or datasets.raw_data_path(p.id).is_file()]
        elif prompt_ids:
            prompts = [catalog.get(pid) for pid in prompt_ids]
        else:
            raise click.UsageError("Name a prompt with --prompt NAME, or use --all.")
        if make_split:  # only make the splits; train in a second run
            for prompt in prompts:
                _make_split(prompt, force=force)
            return
        from bot.core.encoder import SentenceEncoder
        from bot.core.training import TrainConfig, train_prompt

        encoder = SentenceEncoder(settings.model.name)
        build = out or settings.path(settings.model.build_dir)
        summary: dict[str, Any] = {}
        started = time.perf_counter()
        for prompt in prompts:
            click.echo(f"Training {prompt.id} ({variant})…", err=True)
            meta = train_prompt(
                prompt,
                build / prompt.id,
                encoder=encoder,
                variant=variant,
                extra_files=list(data_files),
                config=replace(
                    TrainConfig(),
                    ft_epochs=epochs or TrainConfig.ft_epochs,
                    small_layers=layers or TrainConfig.small_layers,
                    kd_layers=layers or TrainConfig.kd_layers,
                    kd_teachers=teachers,
                ),
                progress=not no_progress and sys.stderr.isatty(),
            )
            summary[prompt.id] = {
                "kind": meta["kind"],
                "version": meta["version"],
                "dev": meta["dev"],
                "candidates_dev_macro_f1": meta["candidates_dev_macro_f1"],
                "threshold": meta["threshold"],
                "temperature": meta["temperature"],
                "seconds": meta["seconds"],
                "folder": str(build / prompt.id),
            }
            onnx = export_for_bot(settings, build / prompt.id)
            if onnx is not None:
                summary[prompt.id]["onnx"] = str(onnx)
        summary["total_seconds"] = round(time.perf_counter() - started, 1)
        click.echo(json.dumps(summary, indent=2))
    except StancebotError as exc:
        _fail(exc)


def export_for_bot(settings: Settings, folder: Path) -> Path | None:
    """Export a trained encoder to ONNX as the bot will run it (``model.backend``/``quantize``), so the bot's start
    neither imports torch nor pays for the export (peak RSS ~1.1 GB otherwise, against ~580 MB); ``None`` when the
    bot runs torch or the model has no encoder of its own. A failed export is reported; the bot exports on start."""
    from bot.core.trained import ENCODER_DIR

    encoder = folder / ENCODER_DIR
    if settings.model.backend != "onnx" or not encoder.is_dir():
        return None
    from bot.config import resolve_quantize
    from bot.core.onnx_export import ExportError, ensure_exported

    try:
        return ensure_exported(
            encoder, settings.path(settings.model.onnx_cache_dir), quantized=resolve_quantize(settings)
        )
    except ExportError as exc:
        click.echo(f"stancebot: {exc}; the bot will try again when it starts", err=True)
        return None


def _make_split(prompt: Any, *, force: bool) -> None:
    from bot.core import datasets

    source = datasets.raw_data_path(prompt.id)
    examples = datasets.for_prompt(datasets.load_jsonl(source), prompt, where=str(source))
    if datasets.has_splits(prompt.id) and not force:
        # made once: rows added to the data file since then go to train and dev; test never changes
        current = {name: datasets.load_split(prompt, name) for name in datasets.SPLITS}
        parts = datasets.extend_splits(examples, current)
        added = {name: len(parts[name]) - len(current[name]) for name in datasets.SPLITS}
        if not any(added.values()):
            click.echo(f"{prompt.id}: every row of {source.name} is already in a split (test is fixed).", err=True)
            return
        folder = datasets.write_splits(prompt.id, parts)
        click.echo(f"{prompt.id}: added {added} -> {folder} (test unchanged: {len(parts['test'])})", err=True)
        return
    parts = datasets.split_examples(examples)
    folder = datasets.write_splits(prompt.id, parts)
    counts = {name: len(rows) for name, rows in parts.items()}
    hard = sum(1 for ex in parts["test"] if set(ex.tags) & set(datasets.HARD_TAGS))
    click.echo(f"{prompt.id}: {counts} -> {folder} (test: {hard} sarcasm/negation replies)", err=True)


@click.command()
@_config
@click.option("--prompt", "prompt_id", required=True, help="Prompt id.")
@click.option(
    "--data",
    "data_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Labelled JSONL (text, label); default: the prompt's committed test split.",
)
@click.option(
    "--model",
    "model_choice",
    default=None,
    help="A model folder, or 'similarity'; default: the prompt's trained model if built, else similarity.",
)
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default=None,
    help="How the encoder runs: torch, or ONNX Runtime (exported once, cached); default: model.backend.",
)
@click.option(
    "--quantize/--no-quantize",
    default=None,
    help="int8 weights in the encoder (faster; accuracy cost in models/README.md); default: model.quantize.",
)
@click.option("--no-speed", is_flag=True, help="Skip the throughput measurement.")
def evaluate(
    config: Path | None,
    prompt_id: str,
    data_file: Path | None,
    model_choice: str | None,
    backend: str | None,
    quantize: bool | None,
    no_speed: bool,
) -> None:
    """Print one JSON object: quality, calibration and speed of a stance model on labelled replies."""
    settings = _settings(config)
    overrides: dict[str, Any] = {}
    if backend is not None:
        overrides["backend"] = backend
    if quantize is not None:
        overrides["quantize"] = quantize
    if overrides:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update=overrides)})
    from bot.config import make_encoder
    from bot.core import datasets, trained
    from bot.core.evaluation import evaluate as run_evaluation
    from bot.core.prompts import PromptCatalog
    from bot.core.stance import GatedClassifier, SimilarityClassifier, StanceClassifier

    try:
        prompt = PromptCatalog.from_dir(settings.path(settings.prompts.dir)).get(prompt_id)
        if data_file is None:
            examples = datasets.load_split(prompt, "test")
            data_name = str(datasets.split_dir(prompt.id) / "test.jsonl")
        else:
            examples = datasets.for_prompt(datasets.load_jsonl(data_file), prompt, where=str(data_file))
            data_name = str(data_file)
        if not examples:
            raise datasets.DataError(f"No labelled replies for prompt {prompt.id!r} in {data_name}.")
        encoder = make_encoder(settings)
        folder = Path(model_choice) if model_choice and model_choice != "similarity" else None
        if folder is None and model_choice is None:
            default = settings.path(settings.model.build_dir) / prompt.id
            folder = default if trained.read_meta(default) is not None else None
        similarity = SimilarityClassifier(prompt, encoder, threshold=settings.model.unclear_threshold)
        inner: StanceClassifier
        base_source = str(encoder_source(settings.model.name))
        pipeline_source = base_source
        if folder is not None:
            model = trained.load_if_present(folder, prompt, encoder)
            if model is None:
                raise datasets.DataError(f"{folder} holds no model for prompt {prompt.id!r} (see the log).")
            inner = model
            if model.kind in trained.OWN_ENCODER_KINDS:
                pipeline_source = str(folder / trained.ENCODER_DIR)
        else:
            inner = similarity
        gated = GatedClassifier(inner, max_chars=settings.model.max_chars)
        used = inner.encoder if isinstance(inner, trained.HeadClassifier) else encoder
        result: dict[str, Any] = {
            "prompt": prompt.id,
            "data": data_name,
            "backend": used.backend,
            "quantized": used.quantized,
        }
        result.update(
            run_evaluation(
                gated,
                examples,
                prompt.label_names,
                speed=not no_speed,
                pipeline_source=pipeline_source,
                base_pipeline_source=base_source,
                batch_size=settings.model.batch_size,
                backlog_window=settings.model.backlog_window,
            )
        )
        if folder is not None:  # the similarity baseline on the same replies, beside the trained model's figures
            baseline = GatedClassifier(similarity, max_chars=settings.model.max_chars)
            base = run_evaluation(baseline, examples, prompt.label_names, speed=False)
            figures: dict[str, Any] = {key: base[key] for key in ("model", "accuracy", "macro_f1", "unclear_share")}
            figures["macro_f1_gain"] = round(result["macro_f1"] - base["macro_f1"], 4)
            result["baseline"] = figures
        click.echo(json.dumps(result, indent=2))
    except StancebotError as exc:
        _fail(exc)


def encoder_source(name: str) -> str:
    """The folder or hub id the configured encoder loads from."""
    from bot.core.encoder import resolve_model

    return resolve_model(name)[0]


COMMANDS: list[click.Command] = [train, evaluate]
