"""Trained stance heads: a classifier on top of the sentence encoder, saved as a model folder.

A model folder (``models/build/<prompt>/``) holds ``model.json`` (label map, threshold, metrics, data hash) and
``head.npz`` (the weights). :func:`load_if_present` returns it only when its labels match the prompt's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bot.core.encoder import SentenceEncoder
from bot.core.prompts import Prompt
from bot.core.stance import StanceClassifier, StanceResult, softmax

log = logging.getLogger(__name__)


class HeadClassifier:
    """A linear (softmax) head over frozen sentence embeddings."""

    def __init__(
        self,
        encoder: SentenceEncoder,
        labels: Sequence[str],
        weights: np.ndarray,
        bias: np.ndarray,
        *,
        threshold: float,
        version: str,
    ) -> None:
        self.encoder = encoder
        self.labels = tuple(labels)
        self.weights = weights
        self.bias = bias
        self.threshold = threshold
        self.version = version

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with the head's most probable label."""
        if not texts:
            return []
        logits = self.encoder.encode(texts) @ self.weights.T + self.bias
        probs = softmax(logits, 1.0)
        best = probs.argmax(axis=1)
        return [StanceResult(self.labels[int(b)], float(probs[i, b])) for i, b in enumerate(best)]

    def save(self, folder: Path, meta: dict[str, Any]) -> None:
        """Write ``head.npz`` and ``model.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "head.npz", weights=self.weights, bias=self.bias)
        info = {
            "kind": "head",
            "labels": list(self.labels),
            "threshold": self.threshold,
            "version": self.version,
        }
        (folder / "model.json").write_text(json.dumps({**meta, **info}, indent=2), encoding="utf-8")


def fit_head(
    encoder: SentenceEncoder,
    texts: Sequence[str],
    labels: Sequence[str],
    label_names: Sequence[str],
    *,
    c: float = 4.0,
    seed: int = 13,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a multinomial logistic-regression head on frozen embeddings; returns ``(weights, bias)``."""
    from sklearn.linear_model import LogisticRegression

    x = encoder.encode(list(texts))
    index = {name: i for i, name in enumerate(label_names)}
    y = np.array([index[label] for label in labels])
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed, class_weight="balanced")
    clf.fit(x, y)
    weights = np.zeros((len(label_names), x.shape[1]), dtype=np.float32)
    bias = np.full(len(label_names), -1e4, dtype=np.float32)  # labels with no examples are never predicted
    for row, cls in enumerate(clf.classes_):
        weights[cls] = clf.coef_[row] if len(clf.classes_) > 2 else (clf.coef_[0] if row else -clf.coef_[0])
        bias[cls] = clf.intercept_[row] if len(clf.classes_) > 2 else (clf.intercept_[0] if row else -clf.intercept_[0])
    return weights, bias


def load_if_present(folder: Path, prompt: Prompt, encoder: SentenceEncoder) -> StanceClassifier | None:
    """The trained model in ``folder`` if one was built for this prompt's labels, else ``None``."""
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if sorted(meta["labels"]) != sorted(prompt.label_names):
            log.warning("Model in %s was trained for other labels; ignoring it", folder)
            return None
        data = np.load(folder / "head.npz")
        return HeadClassifier(
            encoder,
            meta["labels"],
            data["weights"],
            data["bias"],
            threshold=float(meta["threshold"]),
            version=str(meta["version"]),
        )
    except (OSError, KeyError, ValueError) as exc:
        log.warning("Model in %s cannot be loaded (%s); using the similarity baseline", folder, exc)
        return None
