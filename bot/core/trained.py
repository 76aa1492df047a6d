"""Trained stance models: a linear head on sentence embeddings, saved as a model folder that loads offline.

A model folder (``models/build/<prompt>/``) holds:

* ``model.json``: kind (``head``, ``finetuned``, ``setfit``, ``small`` or ``distilled``), label map, threshold,
  temperature, metrics, data hash, version;
* ``head.npz``: the head's weights and bias;
* ``encoder/`` (all kinds but ``head``): the model's own encoder (tuned, cut to its first layers, or distilled) and
  its tokenizer (``save_pretrained`` format).

A ``head`` model reads the bot's shared encoder; the other kinds load their own from ``encoder/``.
:func:`load_if_present` returns a model only when its labels match the prompt's.
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
from bot.core.stance import StanceResult, softmax

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
HEAD_FILE = "head.npz"
ENCODER_DIR = "encoder"
#: Kinds whose folder carries its own encoder in ``encoder/`` (fine-tuned, or contrastively tuned SetFit-style).
OWN_ENCODER_KINDS = ("finetuned", "setfit", "small", "distilled")
#: Bumped when the folder layout changes; older folders are ignored.
FORMAT = 2


class HeadClassifier:
    """A linear softmax head over mean-pooled, unit-length sentence embeddings, with temperature scaling."""

    def __init__(
        self,
        encoder: SentenceEncoder,
        labels: Sequence[str],
        weights: np.ndarray,
        bias: np.ndarray,
        *,
        threshold: float,
        version: str,
        temperature: float = 1.0,
        kind: str = "head",
    ) -> None:
        self.encoder = encoder
        self.labels = tuple(labels)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.threshold = threshold
        self.version = version
        self.temperature = temperature
        self.kind = kind

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw head scores, shape ``(len(texts), len(labels))``."""
        return np.asarray(self.encoder.encode(texts) @ self.weights.T + self.bias)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated label probabilities, shape ``(len(texts), len(labels))``."""
        return softmax(self.logits(texts), self.temperature)

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with the head's most probable label."""
        if not texts:
            return []
        probs = self.probabilities(texts)
        best = probs.argmax(axis=1)
        return [StanceResult(self.labels[int(b)], float(probs[i, b])) for i, b in enumerate(best)]

    def save(self, folder: Path, meta: dict[str, Any]) -> None:
        """Write ``head.npz`` and ``model.json`` into ``folder`` (a fine-tuned encoder is saved by the trainer)."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / HEAD_FILE, weights=self.weights, bias=self.bias)
        info = {
            "format": FORMAT,
            "kind": self.kind,
            "labels": list(self.labels),
            "threshold": self.threshold,
            "temperature": self.temperature,
            "version": self.version,
        }
        (folder / MODEL_FILE).write_text(json.dumps({**meta, **info}, indent=2), encoding="utf-8")


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The ``model.json`` of a model folder, or ``None`` when there is none or it is not valid JSON."""
    path = folder / MODEL_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def quantize(encoder: SentenceEncoder) -> SentenceEncoder:
    """Switch the encoder to int8 weights in place (:meth:`SentenceEncoder.quantize`); returns the encoder.

    torch: ``Linear`` layers dynamic-quantized; onnx: the per-channel int8 export. The speed and stance accuracy
    cost are measured in models/README.md.
    """
    encoder.quantize()
    return encoder


def load_if_present(
    folder: Path, prompt: Prompt, encoder: SentenceEncoder, *, quantized: bool | None = None
) -> HeadClassifier | None:
    """The trained model in ``folder`` if one was built for this prompt's labels, else ``None``.

    A fine-tuned model's own encoder runs on the shared encoder's backend; ``quantized`` applies to it (``None``:
    as the shared encoder is).
    """
    meta = read_meta(folder)
    if meta is None:
        if (folder / MODEL_FILE).exists():
            log.warning("Model in %s has an unreadable %s; using the similarity baseline", folder, MODEL_FILE)
        return None
    try:
        if sorted(meta["labels"]) != sorted(prompt.label_names):
            log.warning(
                "Model in %s was trained for labels %s, prompt %s counts %s; ignoring it",
                folder,
                ", ".join(meta["labels"]),
                prompt.id,
                ", ".join(prompt.label_names),
            )
            return None
        if int(meta.get("format", 1)) != FORMAT:
            log.warning("Model in %s has an old folder format; retrain it (`stancebot train`)", folder)
            return None
        kind = str(meta.get("kind", "head"))
        model_encoder = encoder
        if kind in OWN_ENCODER_KINDS:
            model_encoder = encoder.derive(str(folder / ENCODER_DIR), quantize=quantized)
        elif kind != "head":
            log.warning("Model in %s is of unknown kind %r; ignoring it", folder, kind)
            return None
        data = np.load(folder / HEAD_FILE)
        return HeadClassifier(
            model_encoder,
            meta["labels"],
            data["weights"],
            data["bias"],
            threshold=float(meta["threshold"]),
            temperature=float(meta.get("temperature", 1.0)),
            version=str(meta["version"]),
            kind=kind,
        )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        log.warning("Model in %s cannot be loaded (%s); using the similarity baseline", folder, exc)
        return None
