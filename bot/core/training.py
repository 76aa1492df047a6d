"""Training recipe for a prompt's stance model: a linear head on frozen or tuned embeddings, or a fine-tuned encoder.

``train_prompt`` fits on the committed train split (plus any extra labelled replies), chooses everything it
chooses on the dev split (regularisation, epochs, temperature, the ``unclear`` threshold) and never reads test.

* ``head``: multinomial logistic regression on the shared encoder's embeddings, class-balanced, C chosen on dev.
  Seconds.
* ``finetune``: the top layers of the encoder and a linear head trained end to end with class-weighted cross
  entropy (lower layers frozen and their output cached, so an epoch costs a fraction of a full pass). Minutes.
* ``setfit``: SetFit-style. The encoder is first tuned contrastively (replies with the same label pulled
  together, different labels pushed apart: cosine-similarity loss over all pairs in each batch), then the ``head``
  recipe runs on the tuned embeddings. Minutes.
* ``distil``: the fine-tune as a teacher, then a student made of its first ``kd_layers`` layers trained on the
  teacher's probabilities and the gold labels (knowledge distillation). About twice as fast at inference. Minutes.
* ``auto``: head, fine-tune and the distilled student; keeps the best on dev macro-F1, preferring the student when
  it is within :data:`FAST_MARGIN` of the best (it is faster) and the head on a tie with the fine-tune.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bot.core.calibration import THRESHOLDS, fit_temperature, gate_blocked, macro_f1_at
from bot.core.datasets import (
    Example,
    data_hash,
    load_real,
)
from bot.core.distillation import Teacher, train_distilled, truncated_encoder
from bot.core.encoder import SentenceEncoder
from bot.core.finetune import train_finetuned, train_setfit
from bot.core.heads import ProgressFn, TrainConfig, train_head
from bot.core.prompts import UNCLEAR, Prompt
from bot.core.stance import prompt_fingerprint, softmax
from bot.core.trained import ENCODER_DIR, HeadClassifier
from bot.core.training_data import (
    committed_test_split,
    fewshot_examples,
    labels_of,
    realtrain_files,
    training_data,
    unlabelled_texts,
)

log = logging.getLogger(__name__)

VARIANTS = ("head", "finetune", "setfit", "small", "distil", "auto")


def _rich_progress() -> tuple[ProgressFn, Callable[[], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    )  # fmt: skip
    bar.start()
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        key = stage.split(":", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(stage, total=total)
        bar.update(tasks[key], completed=done, total=total, description=stage)

    return update, bar.stop


#: about twice as fast as the six-layer models.
FAST_MARGIN = 0.01


def choose_variant(variant: str, dev_f1: dict[str, float]) -> str:
    """Which trained candidate a run keeps, from their dev macro-F1.

    ``distil`` keeps the student, and any other single variant keeps itself. ``auto`` keeps the best, except that
    the distilled student wins within :data:`FAST_MARGIN` of it and the head (which shares the bot's encoder) wins
    a tie with the fine-tune.
    """
    wanted = {"finetune": "finetuned", "distil": "distilled"}.get(variant, variant)
    if variant != "auto":
        return wanted if wanted in dev_f1 else "head"
    best = max(dev_f1.values())
    if "distilled" in dev_f1 and dev_f1["distilled"] >= best - FAST_MARGIN:
        return "distilled"
    return "head" if dev_f1["head"] >= best - 1e-9 else max(dev_f1, key=lambda name: dev_f1[name])


def calibrate_on_real(
    prompt: Prompt,
    encoder: SentenceEncoder,
    names: Sequence[str],
    w: np.ndarray,
    b: np.ndarray,
    dev: Sequence[Example],
) -> dict[str, Any]:
    """Temperature and ``unclear`` threshold refitted with the prompt's real-dev statements (nothing if it has none).

    The synthetic dev split still chooses the recipe and its settings. The temperature is fitted on real-dev (how
    sure the model should say it is on what people actually write); the threshold is the one with the best mean
    macro-F1 over real-dev and the synthetic dev split (real statements alone would trade away the clear replies the
    synthetic split covers). The figures at the new settings are recorded as ``real_dev_*`` and
    ``synthetic_dev_macro_f1_at_threshold``.
    """
    real = load_real(prompt, "real-dev")
    if not real:
        return {}
    unclear = names.index(UNCLEAR)
    parts = []
    for examples in (real, dev):
        texts = [ex.text for ex in examples]
        parts.append((encoder.encode(texts) @ w.T + b, labels_of(examples, names), gate_blocked(texts)))
    (real_logits, real_y, real_blocked), (dev_logits, dev_y, dev_blocked) = parts
    temperature = fit_temperature(real_logits, real_y)
    real_probs, dev_probs = softmax(real_logits, temperature), softmax(dev_logits, temperature)

    scored = [
        (
            t,
            macro_f1_at(real_probs, real_y, unclear, t, real_blocked),
            macro_f1_at(dev_probs, dev_y, unclear, t, dev_blocked),
        )
        for t in THRESHOLDS
    ]
    threshold, real_f1, dev_f1 = max(scored, key=lambda row: (row[1] + row[2], -row[0]))
    return {
        "calibrated_on": "real-dev (temperature); real-dev + synthetic dev (threshold)",
        "n_real_dev": len(real),
        "real_dev_macro_f1": round(macro_f1_at(real_probs, real_y, unclear, 0.0, real_blocked), 4),
        "real_dev_macro_f1_at_threshold": round(real_f1, 4),
        "synthetic_dev_macro_f1_at_threshold": round(dev_f1, 4),
        "temperature": temperature,
        "threshold": threshold,
    }


def train_prompt(
    prompt: Prompt,
    out_dir: Path,
    *,
    encoder: SentenceEncoder,
    data: Sequence[Example] | None = None,
    variant: str = "head",
    extra_files: Sequence[Path] = (),
    config: TrainConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a stance model for ``prompt`` and write it to ``out_dir``; returns its ``model.json`` metadata.

    ``data`` replaces the committed train split (``None``: use it); ``extra_files`` are JSONL files of labelled
    replies added to it. ``variant`` is ``head`` (seconds), ``finetune``, ``setfit`` or ``distil`` (minutes),
    ``small`` (seconds), or ``auto`` (head, fine-tune and distilled student; see :func:`choose_variant`). Everything
    is chosen on dev; test is only read to keep its texts out of the distillation's unlabelled texts.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    cfg = config or TrainConfig()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    names = list(prompt.label_names)
    # the real-statement paraphrases join the committed train split (not a train set passed in ``data``)
    real_files = realtrain_files(prompt) if cfg.real_paraphrases and data is None else []
    extra_files = [*extra_files, *real_files]
    train, dev = training_data(prompt, data=data, extra_files=extra_files, seed=cfg.seed)
    missing = sorted(set(names) - {ex.label for ex in train})
    if missing:
        log.warning("Prompt %s: no training replies for %s; those labels are never predicted", prompt.id, missing)
    update, stop = _rich_progress() if progress else (None, lambda: None)
    started = time.perf_counter()
    stage = tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        w, b, info = train_head(encoder, names, train, dev, cfg, update)
        timings = {"head_seconds": round(time.perf_counter() - t0, 1)}
        kind, candidates = "head", {"head": info["dev_macro_f1"]}
        # each candidate trains in its own folder; the winner's encoder moves to ``tmp/encoder``
        tuned: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
        if variant in ("finetune", "auto", "distil"):
            t0 = time.perf_counter()
            tuned["finetuned"] = train_finetuned(
                names, train, dev, cfg, tmp / "finetuned", init=(w, b), progress=update
            )
            timings["finetune_seconds"] = round(time.perf_counter() - t0, 1)
        if variant == "setfit":  # opt-in: minutes more, and no better than the fine-tune on dev (models/README.md)
            t0 = time.perf_counter()
            extra = fewshot_examples(prompt) if cfg.sf_label_texts else ()
            tuned["setfit"] = train_setfit(
                encoder, names, train, dev, cfg, tmp / "setfit", extra=extra, progress=update
            )
            timings["setfit_seconds"] = round(time.perf_counter() - t0, 1)
        if variant in ("distil", "auto"):  # the fine-tuned model(s) teach a student with fewer layers
            t0 = time.perf_counter()
            runs = [(tmp / "finetuned", tuned["finetuned"])]
            for k in range(1, cfg.kd_teachers):  # more fine-tunes with other seeds: an ensemble teaches better
                more = train_finetuned(
                    names, train, dev, replace(cfg, seed=cfg.seed + k), tmp / f"teacher-{k}", init=(w, b),
                    progress=update, stage=f"teacher {k + 1}",
                )  # fmt: skip
                runs.append((tmp / f"teacher-{k}", more))
            teachers: list[Teacher] = [
                (SentenceEncoder(str(where / ENCODER_DIR)), tw, tb, tinfo["temperature"])
                for where, (tw, tb, tinfo) in runs
            ]
            teacher_f1 = [tinfo["dev_macro_f1"] for _, (_, _, tinfo) in runs]
            unlabelled = unlabelled_texts(prompt, [*dev, *committed_test_split(prompt)])
            if len(unlabelled) > cfg.kd_unlabelled:
                unlabelled = random.Random(cfg.seed).sample(unlabelled, cfg.kd_unlabelled)
            tuned["distilled"] = train_distilled(
                teachers, names, train, dev, cfg, tmp / "distilled", unlabelled=unlabelled, progress=update
            )
            tuned["distilled"][2]["teacher_dev_macro_f1"] = teacher_f1[0] if len(teacher_f1) == 1 else teacher_f1
            for where, _ in runs[1:]:
                shutil.rmtree(where, ignore_errors=True)
            timings["distil_seconds"] = round(time.perf_counter() - t0, 1)
        if variant == "small":  # opt-in, not part of auto: it trades accuracy for speed
            t0 = time.perf_counter()
            small = truncated_encoder(encoder, cfg.small_layers, tmp / "small" / ENCODER_DIR)
            tuned["small"] = train_head(small, names, train, dev, cfg, update)
            timings["small_seconds"] = round(time.perf_counter() - t0, 1)
        candidates.update({name: result[2]["dev_macro_f1"] for name, result in tuned.items()})
        chosen = choose_variant(variant, candidates)
        if chosen != "head":
            kind, (w, b, info) = chosen, tuned[chosen]
            (tmp / kind / ENCODER_DIR).rename(tmp / ENCODER_DIR)
        for name in tuned:
            shutil.rmtree(tmp / name, ignore_errors=True)
        final = encoder if kind == "head" else SentenceEncoder(str(tmp / ENCODER_DIR))
        if cfg.calibrate_on_real:
            info.update(calibrate_on_real(prompt, final, names, w, b, dev))
    finally:
        stop()
    train_hash = data_hash([*train, *dev])
    encoder_name = {
        "head": encoder.name,
        "setfit": f"{encoder.name}-st",
        "small": f"{encoder.name}-L{cfg.small_layers}",
        "distilled": f"{encoder.name}-kd{cfg.kd_layers}",
    }.get(kind, f"{encoder.name}-ft")
    version = f"{kind}:{encoder_name}:{train_hash[:8]}:{prompt_fingerprint(prompt)}"
    meta: dict[str, Any] = {
        "prompt": prompt.id,
        "base_encoder": encoder.name,
        "variant_requested": variant,
        "candidates_dev_macro_f1": candidates,
        "data_hash": train_hash,
        "n_train": len(train),
        "n_dev": len(dev),
        "train_label_counts": {n: sum(1 for ex in train if ex.label == n) for n in names},
        "extra_files": [str(p) for p in extra_files],
        "config": asdict(cfg),
        "dev": {key: value for key, value in info.items() if key not in ("temperature", "threshold")},
        "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    model = HeadClassifier(
        encoder, names, w, b, threshold=float(info["threshold"]), temperature=float(info["temperature"]),
        version=version, kind=kind,
    )  # fmt: skip
    model.save(stage, meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    stage.rename(out_dir)
    log.info(
        "Prompt %s: trained %s model %s in %.1f s -> %s", prompt.id, kind, version, meta["seconds"]["total"], out_dir
    )
    return {**meta, "kind": kind, "version": version, "threshold": model.threshold, "temperature": model.temperature}
