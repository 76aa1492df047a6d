"""Choosing how a trained model answers: the softmax temperature, the ``unclear`` threshold, and the gate.

Shared by training (every recipe calibrates on dev) and evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.core.scoring import macro_f1
from bot.core.stance import softmax, unsupported_language
from bot.core.text import has_words, normalise_reply

#: Precision the non-``unclear`` labels should reach on dev; the threshold is chosen for it.
PRECISION_TARGET = 0.9
#: ...while still giving a stance to at least this share of the replies that have one (else: best macro-F1).
MIN_COVERAGE = 0.7


def apply_threshold(probs: np.ndarray, threshold: float, unclear: int, blocked: np.ndarray | None = None) -> np.ndarray:
    """Arg-max labels, with stances below ``threshold`` (and ``blocked`` rows) turned into ``unclear``."""
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    pred = np.where((pred != unclear) & (conf < threshold), unclear, pred)
    if blocked is not None:
        pred = np.where(blocked, unclear, pred)
    return np.asarray(pred)


def stance_precision(y: np.ndarray, pred: np.ndarray, unclear: int) -> tuple[float, float]:
    """``(precision, coverage)`` of the non-``unclear`` predictions: share correct, and share of all replies."""
    mask = pred != unclear
    if not mask.any():
        return 1.0, 0.0
    return float((pred[mask] == y[mask]).mean()), float(mask.mean())


#: The ``unclear`` thresholds a model's threshold is chosen from.
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.0, 0.96, 0.01), 2))


def macro_f1_at(probs: np.ndarray, y: np.ndarray, unclear: int, threshold: float, blocked: np.ndarray | None) -> float:
    """Macro-F1 of the predictions at ``threshold`` (see :func:`apply_threshold`)."""
    return macro_f1(y.tolist(), apply_threshold(probs, threshold, unclear, blocked).tolist(), probs.shape[1])


def choose_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    unclear: int,
    *,
    target: float = PRECISION_TARGET,
    blocked: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``unclear`` threshold for a model, chosen on dev.

    The lowest threshold at which the non-``unclear`` labels reach ``target`` precision while still covering at
    least :data:`MIN_COVERAGE` of the replies that have a stance; when none does, the one with the best macro-F1.
    """
    n_labels = probs.shape[1]
    stance_share = float((y != unclear).mean())
    rows = []
    for t in THRESHOLDS:
        pred = apply_threshold(probs, t, unclear, blocked)
        precision, coverage = stance_precision(y, pred, unclear)
        rows.append((t, precision, coverage, macro_f1(y.tolist(), pred.tolist(), n_labels)))
    meeting = [r for r in rows if r[1] >= target and r[2] >= MIN_COVERAGE * stance_share]
    met = bool(meeting)
    best = meeting[0] if met else max(rows, key=lambda r: (r[3], -r[0]))
    return {
        "threshold": best[0],
        "dev_precision": round(best[1], 4),
        "dev_coverage": round(best[2], 4),
        "dev_macro_f1_at_threshold": round(best[3], 4),
        "precision_target": target,
        "precision_target_met": met,
    }


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood of ``y`` (grid search)."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 121)):
        p = softmax(logits, float(t))
        nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return round(best_t, 4)


def gate_blocked(texts: Sequence[str], *, max_chars: int = 2000) -> np.ndarray:
    """True for texts the gate answers itself (empty, no words, unsupported language): the model never sees them."""
    out = []
    for raw in texts:
        text = normalise_reply(raw or "", max_chars=max_chars)
        out.append(not text or not has_words(text) or unsupported_language(text) is not None)
    return np.array(out, dtype=bool)
