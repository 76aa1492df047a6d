"""A prompt's own stance head, learned from the labels its server gives it, on top of the model that serves it.

The base is whatever serves a prompt that has no trained model of its own: the general model
(:mod:`bot.core.general`, which reads any prompt from its label descriptions) when one is shipped, else the
similarity baseline (:class:`bot.core.stance.SimilarityClassifier`); both give per-label scores and the reply's
vector (:class:`bot.core.stance.StanceFeatures`). Once members and moderators have labelled some of a prompt's
replies (declared stances, relabels, review decisions), a small head learns from them: multinomial logistic
regression over the base's log-probabilities and the reply's vector, *centred on the base* (its weights start at,
and are pulled back towards, "copy the base's answer"), so a handful of labels nudges the base and a few hundred
can overrule it.

It is numpy only: a head trains in well under a second on a few hundred replies, in a worker thread, with the bot's
base install (no torch). :func:`compare` decides whether a new head is better than what serves the prompt now, on
labels the fit never saw (k-fold).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.core.scoring import macro_f1
from bot.core.stance import StanceFeatures, StanceResult, best_labels, softmax

#: Labelled replies a prompt needs before a head is trained for it.
MIN_LABELS = 30
#: Folds of the comparison on held-back labels.
FOLDS = 5


def log_probs(scores: npt.NDArray[np.floating[Any]], temperature: float) -> npt.NDArray[np.float64]:
    """Row-wise log-softmax of ``scores / temperature`` (padding slots of ``-inf`` stay ``-inf``)."""
    z = scores.astype(np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


def design(scores: npt.NDArray[np.floating[Any]], vectors: npt.NDArray[np.floating[Any]], temperature: float) -> Any:
    """The head's input: the base model's log-probabilities, then the reply vector."""
    return np.concatenate([log_probs(scores, temperature), vectors.astype(np.float64)], axis=1)


def fit(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    k: int,
    *,
    l2: float = 1.0,
    steps: int = 300,
    lr: float = 0.05,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weights ``(k, features)`` and bias ``(k,)`` minimising cross entropy plus ``l2`` x the squared distance to
    the prior head (identity on the log-probabilities, zero on the vector), by full-batch Adam. Class-balanced."""
    n, f = x.shape
    w0 = np.zeros((k, f))
    w0[:, :k] = np.eye(k)
    w, b = w0.copy(), np.zeros(k)
    if n == 0:
        return w, b
    counts = np.bincount(y, minlength=k).astype(np.float64)
    weight = np.where(counts > 0, n / (k * np.maximum(counts, 1)), 0.0)[y]
    onehot = np.eye(k)[y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        p = softmax(x @ w.T + b, 1.0)
        g = (p - onehot) * weight[:, None] / weight.sum()
        grads = [g.T @ x + l2 * (w - w0) / n, g.sum(axis=0)]
        for i, (param, grad) in enumerate(zip((w, b), grads, strict=True)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad**2
            param -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return w, b


@dataclass
class PromptHead:
    """A trained head for one prompt (stored as JSON: labels, weights, bias, figures)."""

    labels: tuple[str, ...]
    weights: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    base_version: str
    n_labels: int
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """A short, stable name for this head: changes when its weights change."""
        # of the weights as stored (rounded, no negative zeros), so the head read back has the same version
        stored = (np.round(a, 6) + 0.0 for a in (self.weights, self.bias))
        digest = hashlib.sha256(b"".join(a.tobytes() for a in stored)).hexdigest()[:8]
        return f"adapted:{self.n_labels}:{digest}"

    def to_json(self) -> str:
        """Plain JSON (weights as nested lists)."""
        data = {
            "labels": list(self.labels),
            "weights": self.weights.round(6).tolist(),
            "bias": self.bias.round(6).tolist(),
            "base_version": self.base_version,
            "n_labels": self.n_labels,
            "figures": self.figures,
        }
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> PromptHead:
        """The head saved by :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            tuple(data["labels"]),
            np.asarray(data["weights"], dtype=np.float64),
            np.asarray(data["bias"], dtype=np.float64),
            str(data.get("base_version", data.get("general_version", ""))),
            int(data["n_labels"]),
            dict(data.get("figures", {})),
        )


class AdaptedClassifier:
    """A base model plus a prompt's own head (a :class:`bot.core.stance.StanceClassifier`)."""

    def __init__(self, base: StanceFeatures, head: PromptHead) -> None:
        if tuple(head.labels) != tuple(base.labels):
            raise ValueError("the head was trained for other labels than the prompt has now")
        self.base = base
        self.head = head
        self.labels = base.labels
        self.threshold = base.threshold
        self.kind = "adapted"
        self.version = f"{base.version}+{head.version}"

    def probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Label probabilities from the head over the base model's outputs."""
        scores, vectors = self.base.features(texts)
        x = design(scores, vectors, self.base.temperature)
        return softmax(x @ self.head.weights.T + self.head.bias, 1.0)

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with its most probable label."""
        if not texts:
            return []
        return best_labels(self.probabilities(texts), self.labels)


def _folds(y: npt.NDArray[np.int64], folds: int, seed: int) -> list[npt.NDArray[np.int64]]:
    """Stratified fold indices."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        for j, i in enumerate(idx):
            parts[j % folds].append(int(i))
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts if p]


#: Replies per call of the base's ``features`` while training: the base model serves live replies meanwhile, and
#: each call holds it (the encoder's lock) only this long.
FEATURE_CHUNK = 32


def features(base: StanceFeatures, texts: Sequence[str]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """``base.features(texts)`` in chunks of :data:`FEATURE_CHUNK`, so live replies get the model in between."""
    parts = [base.features(texts[i : i + FEATURE_CHUNK]) for i in range(0, len(texts), FEATURE_CHUNK)]
    if not parts:
        return base.features(texts)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _f1(y: npt.NDArray[np.int64], pred: npt.NDArray[np.int64], k: int) -> float:
    return round(macro_f1(y.tolist(), pred.tolist(), k), 4)


def compare(
    base: StanceFeatures,
    texts: Sequence[str],
    gold: Sequence[str],
    *,
    current: PromptHead | None = None,
    fresh: Sequence[bool] | None = None,
    seed: int = 13,
    l2: float = 1.0,
) -> tuple[PromptHead, dict[str, Any]]:
    """Train a head on all of ``texts``/``gold`` and measure it on labels its fits never saw (k-fold): returns the
    head and ``{"n", "base_macro_f1", "head_macro_f1", "better"}``.

    ``better`` says the head beats the base on the held-back folds. With a ``current`` head (the one serving the
    prompt now) and ``fresh`` (which labels arrived after it was trained, so it never saw them), the figures add
    ``"n_fresh"``, ``"current_fresh_macro_f1"`` and ``"head_fresh_macro_f1"`` (the new head's held-back answers
    on those same labels), and ``better`` also needs the new head to beat the current one there.
    """
    labels = base.labels
    y = np.asarray([labels.index(g) for g in gold], dtype=np.int64)
    scores, vectors = features(base, texts)
    x = design(scores, vectors, base.temperature)
    k = len(labels)
    base_pred = np.asarray(scores.argmax(axis=1), dtype=np.int64)
    oof = np.zeros(len(y), dtype=np.int64)
    for test in _folds(y, min(FOLDS, max(2, int(np.bincount(y).max()))), seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        w, b = fit(x[train], y[train], k, l2=l2)
        oof[test] = (x[test] @ w.T + b).argmax(axis=1)
    figures: dict[str, Any] = {"n": len(y), "base_macro_f1": _f1(y, base_pred, k), "head_macro_f1": _f1(y, oof, k)}
    better = figures["head_macro_f1"] > figures["base_macro_f1"]
    if current is not None and fresh is not None:
        mask = np.asarray(fresh, dtype=bool)
        if tuple(current.labels) != tuple(labels) or current.weights.shape[1] != x.shape[1]:
            figures["current_fresh_macro_f1"] = None  # the current head no longer fits this base: any head wins
        elif mask.any():
            current_pred = (x[mask] @ current.weights.T + current.bias).argmax(axis=1)
            figures["n_fresh"] = int(mask.sum())
            figures["current_fresh_macro_f1"] = _f1(y[mask], current_pred, k)
            figures["head_fresh_macro_f1"] = _f1(y[mask], oof[mask], k)
            better = better and figures["head_fresh_macro_f1"] > figures["current_fresh_macro_f1"]
        else:
            better = False  # nothing the current head has not seen: no evidence the new one is better
    figures["better"] = better
    w, b = fit(x, y, k, l2=l2)
    return PromptHead(tuple(labels), w, b, base.version, len(y), figures), figures
