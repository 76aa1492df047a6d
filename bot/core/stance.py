"""Stance classification: one interface, a similarity baseline, and the checks every model shares.

``classify(texts) -> [StanceResult]`` is batched and synchronous; :mod:`bot.core.service` runs it off the event
loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from bot.core.encoder import SentenceEncoder
from bot.core.prompts import UNCLEAR, Prompt
from bot.core.text import has_words, normalise_reply

log = logging.getLogger(__name__)


class StanceResult(NamedTuple):
    """A reply's stance: the label, the model's confidence in it (0-1) and why it is ``unclear``, if it is."""

    label: str
    confidence: float
    reason: str | None = None
    #: The version of the model that gave it, set by the stance service as it classifies (``None`` elsewhere).
    version: str | None = None


class StanceClassifier(Protocol):
    """Anything that labels a batch of replies for one prompt."""

    @property
    def version(self) -> str:
        """Stored with every stance, e.g. ``similarity:all-MiniLM-L6-v2:1a2b3c4d``."""
        ...

    @property
    def threshold(self) -> float:
        """Below this confidence a stance becomes ``unclear``."""
        ...

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text; the result has one entry per text, in order."""
        ...


@runtime_checkable
class StanceFeatures(Protocol):
    """A classifier a prompt's learned head (:mod:`bot.core.adapt`) can sit on: per-label scores and the reply's
    vector for a batch, and the temperature that turns the scores into probabilities."""

    labels: tuple[str, ...]
    temperature: float

    @property
    def version(self) -> str:
        """The base model's version (a head trained on another version does not apply)."""
        ...

    @property
    def threshold(self) -> float:
        """Below this confidence a stance becomes ``unclear``."""
        ...

    def features(self, texts: Sequence[str]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """Label scores ``(len(texts), len(labels))`` and reply vectors ``(len(texts), dim)``."""
        ...


def prompt_fingerprint(prompt: Prompt) -> str:
    """A short hash of a prompt's labels, descriptions and examples (changes when the label set changes)."""
    data = json.dumps(prompt.to_dict()["labels"], sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:8]


def best_labels(probs: np.ndarray, labels: Sequence[str]) -> list[StanceResult]:
    """Each row's most probable label with its probability (rows of ``probs`` follow ``labels``)."""
    best = probs.argmax(axis=1)
    return [StanceResult(labels[int(b)], float(probs[i, b])) for i, b in enumerate(best)]


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``scores / temperature``."""
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


class SimilarityClassifier:
    """Zero-training baseline: cosine similarity of a reply to each label's description and examples.

    A label's score is the mean of its best match and its average match; a softmax over labels turns scores into
    confidences. Works for any prompt that has label descriptions and a few examples.
    """

    def __init__(
        self, prompt: Prompt, encoder: SentenceEncoder, *, threshold: float = 0.5, temperature: float = 0.03
    ) -> None:
        self.prompt = prompt
        self.encoder = encoder
        self.threshold = threshold
        self.temperature = temperature
        self.labels = prompt.label_names
        self.version = f"similarity:{encoder.name}:{prompt_fingerprint(prompt)}"
        self._protos: list[np.ndarray] = []
        for label in prompt.labels:
            texts = [f"{label.description}", *label.examples]
            self._protos.append(encoder.encode(texts))

    def features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per-label similarity scores ``(len(texts), len(labels))`` and the replies' embeddings, for a learned
        per-prompt head (:mod:`bot.core.adapt`)."""
        emb = self.encoder.encode(texts)
        cols = []
        for protos in self._protos:
            sims = emb @ protos.T
            cols.append(0.5 * sims.max(axis=1) + 0.5 * sims.mean(axis=1))
        return np.stack(cols, axis=1), emb

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Per-label similarity scores, shape ``(len(texts), len(labels))``."""
        return self.features(texts)[0]

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text by its most similar label."""
        if not texts:
            return []
        return best_labels(softmax(self.scores(texts), self.temperature), self.labels)


def unsupported_language(text: str) -> str | None:
    """Why the (English-only) encoder cannot judge ``text``, or ``None`` when it can.

    Replies written mostly in CJK scripts (Japanese, Chinese, Korean), other non-Latin scripts, or clearly in
    another Latin-script language (function-word check, see :mod:`bot.core.language`) are flagged.
    """
    from bot.core.language import detect_non_english

    language = detect_non_english(text)
    if language is None:
        return None
    return f"language: {language} (the stance model reads English only)"


class GatedClassifier:
    """Wraps a model with the checks every reply gets before and after it is scored.

    Empty, emoji-only and unsupported-language replies become ``unclear`` with a reason and never reach the
    model; a stance below the model's threshold becomes ``unclear`` with the runner-up recorded in the reason.
    """

    def __init__(
        self,
        inner: StanceClassifier,
        *,
        max_chars: int = 2000,
        language_check: Callable[[str], str | None] = unsupported_language,
    ) -> None:
        self.inner = inner
        self.max_chars = max_chars
        self.language_check = language_check

    @property
    def version(self) -> str:
        """The wrapped model's version."""
        return self.inner.version

    @property
    def threshold(self) -> float:
        """The wrapped model's threshold."""
        return self.inner.threshold

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text; see the class docstring for what becomes ``unclear``."""
        results: list[StanceResult | None] = [None] * len(texts)
        todo: list[int] = []
        cleaned: list[str] = []
        for i, raw in enumerate(texts):
            text = normalise_reply(raw or "", max_chars=self.max_chars)
            if not text:
                results[i] = StanceResult(UNCLEAR, 1.0, "empty reply")
            elif not has_words(text):
                results[i] = StanceResult(UNCLEAR, 1.0, "no words (emoji or symbols only)")
            elif (why := self.language_check(text)) is not None:
                results[i] = StanceResult(UNCLEAR, 1.0, why)
            else:
                todo.append(i)
                cleaned.append(text)
        for i, res in zip(todo, self.inner.classify(cleaned), strict=True):
            if res.label != UNCLEAR and res.confidence < self.threshold:
                res = StanceResult(UNCLEAR, res.confidence, f"low confidence ({res.label} {res.confidence:.2f})")
            results[i] = res
        return [r for r in results if r is not None]
