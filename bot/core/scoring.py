"""Scores shared by training, evaluation and the per-prompt heads (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_labels: int) -> float:
    """Macro-averaged F1 over the labels that occur in ``y_true`` or ``y_pred``."""
    scores = []
    for k in range(n_labels):
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == k and p == k)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != k and p == k)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == k and p != k)
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0
