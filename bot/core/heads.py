"""The ``head`` recipe: class-balanced logistic regression on an encoder's embeddings, calibrated on dev.

Also the hyper-parameters every recipe shares (:class:`TrainConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.core.calibration import PRECISION_TARGET, apply_threshold, choose_threshold, fit_temperature, gate_blocked
from bot.core.datasets import (
    SEED,
    Example,
)
from bot.core.encoder import SentenceEncoder
from bot.core.prompts import UNCLEAR
from bot.core.scoring import macro_f1
from bot.core.stance import softmax
from bot.core.training_data import labels_of

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the recipe (the defaults were chosen on the dev splits)."""

    seed: int = SEED
    c_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    ft_layers: int = 3
    ft_epochs: int = 6
    ft_lr: float = 2e-4
    ft_head_lr: float = 2e-3
    ft_batch: int = 16
    ft_max_length: int = 128
    sf_layers: int = 6
    sf_epochs: int = 8
    sf_lr: float = 1e-4
    sf_batch: int = 32
    sf_label_texts: bool = True
    #: ``small`` variant: how many of the encoder's transformer layers it keeps (fewer layers, faster inference).
    small_layers: int = 2
    #: ``distilled`` variant: the student keeps this many layers; the loss mixes the gold labels (weight
    #: ``kd_alpha``) and the teacher's probabilities at temperature ``kd_temperature``.
    kd_layers: int = 3
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    kd_epochs: int = 8
    #: How many fine-tuned teachers (seeds ``seed``, ``seed + 1``, ...) the student learns from, averaged.
    kd_teachers: int = 1
    #: At most this many unlabelled texts join the distillation (a fixed-seed sample when there are more).
    kd_unlabelled: int = 4000
    precision_target: float = PRECISION_TARGET
    #: Add the prompt's paraphrases of real public statements (``models/data/realtrain/<prompt>.jsonl`` and
    #: ``<prompt>.*.jsonl``, from pages outside the real-world evaluation sets) to the committed train split.
    real_paraphrases: bool = True
    #: When the prompt has real-dev statements: the temperature fitted on them (what people actually write) and the
    #: ``unclear`` threshold chosen on them and the synthetic dev split together; else both on synthetic dev.
    calibrate_on_real: bool = True


# ---------------------------------------------------------------------------------------------------------------


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    *,
    c: float,
    seed: int = SEED,
    sample_weight: np.ndarray | None = None,
    max_iter: int = 5000,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression; ``(weights, bias)`` with a row for every label.

    ``sample_weight`` multiplies the class-balancing weights (e.g. to weigh one language's rows more)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, class_weight="balanced")
    clf.fit(x, y, sample_weight=sample_weight)
    weights = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
    bias = np.full(n_labels, -1e4, dtype=np.float32)  # labels with no examples are never predicted
    classes = [int(c) for c in clf.classes_]
    if len(classes) == 2:
        coef = np.stack([-clf.coef_[0], clf.coef_[0]]) / 2
        icpt = np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
    else:
        coef, icpt = clf.coef_, clf.intercept_
    for row, cls in enumerate(classes):
        weights[cls] = coef[row]
        bias[cls] = icpt[row]
    return weights, bias


def calibrate_logits(
    logits_dev: np.ndarray, y_dev: np.ndarray, unclear: int, blocked: np.ndarray, cfg: TrainConfig
) -> dict[str, Any]:
    """Temperature, ``unclear`` threshold and the dev figures of a model from its dev logits."""
    temperature = fit_temperature(logits_dev, y_dev)
    probs = softmax(logits_dev, temperature)
    raw_pred = apply_threshold(probs, 0.0, unclear, blocked)
    out = choose_threshold(probs, y_dev, unclear, target=cfg.precision_target, blocked=blocked)
    out["temperature"] = temperature
    out["dev_macro_f1"] = round(macro_f1(y_dev.tolist(), raw_pred.tolist(), probs.shape[1]), 4)
    out["dev_accuracy"] = round(float((raw_pred == y_dev).mean()), 4)
    return out


def train_head(
    encoder: SentenceEncoder,
    names: Sequence[str],
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    progress: ProgressFn | None = None,
    stage: str = "head",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit the head variant; returns ``(weights, bias, info)`` with C, temperature and threshold chosen on dev."""
    x_train = encoder.encode([ex.text for ex in train])
    x_dev = encoder.encode([ex.text for ex in dev])
    y_train, y_dev = labels_of(train, names), labels_of(dev, names)
    blocked = gate_blocked([ex.text for ex in dev])
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    scores = {}
    for i, c in enumerate(cfg.c_grid):
        w, b = fit_logistic(x_train, y_train, len(names), c=c, seed=cfg.seed)
        pred = apply_threshold(x_dev @ w.T + b, 0.0, names.index(UNCLEAR), blocked)
        f1 = macro_f1(y_dev.tolist(), pred.tolist(), len(names))
        scores[str(c)] = round(f1, 4)
        if best is None or f1 > best[0] + 1e-9:
            best = (f1, c, w, b)
        if progress:
            progress(f"{stage}: choosing C on dev", i + 1, len(cfg.c_grid))
    assert best is not None
    _, c, w, b = best
    info = {"c": c, "dev_macro_f1_by_c": scores}
    info.update(calibrate_logits(x_dev @ w.T + b, y_dev, names.index(UNCLEAR), blocked, cfg))
    return w, b, info
