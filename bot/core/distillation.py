"""Knowledge distillation: fine-tuned teachers teach a student made of the first layers of the encoder."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bot.core.datasets import (
    Example,
)
from bot.core.encoder import SentenceEncoder
from bot.core.finetune import train_finetuned
from bot.core.heads import ProgressFn, TrainConfig, train_head
from bot.core.stance import softmax


def truncated_encoder(base: SentenceEncoder, layers: int, folder: Path) -> SentenceEncoder:
    """The first ``layers`` transformer layers of ``base``'s model (embeddings included), saved to ``folder`` in
    ``save_pretrained`` format with its tokenizer, and loaded as a torch encoder for training."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(base.source, local_files_only=True)
    total = len(model.encoder.layer)
    if not 1 <= layers <= total:
        raise ValueError(f"small_layers must be between 1 and {total}, not {layers}")
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base.source, local_files_only=True).save_pretrained(folder)
    return SentenceEncoder(str(folder), max_length=base.max_length)


Teacher = tuple[SentenceEncoder, np.ndarray, np.ndarray, float]


def teacher_logits(teachers: Sequence[Teacher], texts: Sequence[str]) -> np.ndarray:
    """The teachers' mean calibrated log-probabilities for ``texts`` (one teacher: its own, up to a constant)."""
    total = np.zeros((len(texts), teachers[0][1].shape[0]), dtype=np.float64)
    for encoder, weights, bias, temperature in teachers:
        total += np.log(np.clip(softmax(encoder.encode(texts) @ weights.T + bias, temperature), 1e-12, None))
    return np.asarray(total / len(teachers), dtype=np.float32)


def train_distilled(
    teachers: Sequence[Teacher],
    names: Sequence[str],
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    folder: Path,
    *,
    unlabelled: Sequence[str] = (),
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Distil tuned teachers into a student made of the first teacher's first ``cfg.kd_layers`` layers.

    The student starts as the truncated teacher with a logistic head fitted on its embeddings; then all its layers
    and the head train on the teachers' mean calibrated log-probabilities (:func:`teacher_logits`) for ``train``
    and ``unlabelled`` plus the gold labels of ``train`` (:func:`train_finetuned` with a teacher), ``cfg.kd_epochs``
    epochs, best epoch on dev. Saves the student's encoder to ``folder/encoder``; returns ``(weights, bias, info)``.
    """
    texts = [ex.text for ex in train] + list(unlabelled)
    logits = teacher_logits(teachers, texts)
    start = folder / "student-start"
    small = truncated_encoder(teachers[0][0], cfg.kd_layers, start)
    w0, b0, _ = train_head(small, names, train, dev, cfg, progress, "distil: student head")
    student_cfg = replace(cfg, ft_layers=cfg.kd_layers, ft_epochs=cfg.kd_epochs)
    w, b, info = train_finetuned(
        names, train, dev, student_cfg, folder, base=str(start), init=(w0, b0), teacher=logits,
        unlabelled=unlabelled, progress=progress, stage="distil",
    )  # fmt: skip
    shutil.rmtree(start, ignore_errors=True)
    info["teachers"] = len(teachers)
    info["student_layers"] = cfg.kd_layers
    return w, b, info


#: ``auto`` keeps the distilled student unless another candidate beats it on dev by more than this: it classifies
