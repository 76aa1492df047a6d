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
from bot.core.language import Language, detect_language
from bot.core.prompts import UNCLEAR, Prompt
from bot.core.text import has_words, normalise_reply

log = logging.getLogger(__name__)


class StanceResult(NamedTuple):
    """A reply's stance: the label, the model's confidence in it (0-1) and why it is ``unclear``, if it is.

    The gate (:class:`GatedClassifier`) adds the path that produced it: the reply's ``language`` (ISO 639-1,
    ``en`` for English), the ``encoder`` that read it, and ``model_version`` when a model other than the prompt's
    own (the multilingual head) gave it; the stance service fills ``model_version`` in with the version of the
    prompt's model otherwise, as it classifies (so a model switched meanwhile cannot mislabel it).
    """

    label: str
    confidence: float
    reason: str | None = None
    language: str | None = None
    encoder: str | None = None
    model_version: str | None = None


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


def encoder_of(model: StanceClassifier) -> str:
    """The name of the encoder a model reads with: its ``encoder_name``, else the second field of its version
    (``distilled:all-MiniLM-L6-v2-kd3:...`` -> ``all-MiniLM-L6-v2-kd3``)."""
    name = getattr(model, "encoder_name", None)
    if isinstance(name, str) and name:
        return name
    parts = model.version.split(":")
    return parts[1] if len(parts) > 1 else parts[0]


class GatedClassifier:
    """Wraps a model with the checks every reply gets before and after it is scored.

    Empty and emoji-only replies become ``unclear`` with a reason and never reach a model. English replies go to
    ``inner``; replies in another language go to ``multilingual`` when it reads that language (``languages``), else
    they become ``unclear`` with the language as the reason. A stance below its model's threshold becomes
    ``unclear`` with the runner-up recorded in the reason. Every result names its language and encoder.
    """

    def __init__(
        self,
        inner: StanceClassifier,
        *,
        max_chars: int = 2000,
        multilingual: StanceClassifier | None = None,
        languages: frozenset[str] = frozenset(),
        detect: Callable[[str], Language | None] = detect_language,
    ) -> None:
        self.inner = inner
        self.max_chars = max_chars
        self.multilingual = multilingual
        self.languages = languages if multilingual is not None else frozenset()
        self.detect = detect

    @property
    def version(self) -> str:
        """The wrapped (English) model's version."""
        return self.inner.version

    @property
    def threshold(self) -> float:
        """The wrapped (English) model's threshold."""
        return self.inner.threshold

    def _unsupported(self, language: Language) -> str:
        if self.multilingual is None:
            return f"language: {language.name} (the stance model reads English only)"
        return f"language: {language.name} (no stance model reads it)"

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text; see the class docstring for what becomes ``unclear``."""
        results: list[StanceResult | None] = [None] * len(texts)
        english: list[tuple[int, str]] = []
        other: list[tuple[int, str, str]] = []
        for i, raw in enumerate(texts):
            text = normalise_reply(raw or "", max_chars=self.max_chars)
            if not text:
                results[i] = StanceResult(UNCLEAR, 1.0, "empty reply")
            elif not has_words(text):
                results[i] = StanceResult(UNCLEAR, 1.0, "no words (emoji or symbols only)")
            elif (language := self.detect(text)) is None:
                english.append((i, text))
            elif language.code in self.languages:
                other.append((i, text, language.code))
            else:
                results[i] = StanceResult(UNCLEAR, 1.0, self._unsupported(language), language=language.code)
        if english:
            self._score(self.inner, english, "en", results, version=None)
        if other and self.multilingual is not None:
            self._score(self.multilingual, [(i, t) for i, t, _ in other], [c for _, _, c in other], results,
                        version=self.multilingual.version)  # fmt: skip
        return [r for r in results if r is not None]

    @staticmethod
    def _score(
        model: StanceClassifier,
        items: list[tuple[int, str]],
        language: str | list[str],
        results: list[StanceResult | None],
        *,
        version: str | None,
    ) -> None:
        encoder = encoder_of(model)
        scored = model.classify([text for _, text in items])
        for k, ((i, _), res) in enumerate(zip(items, scored, strict=True)):
            if res.label != UNCLEAR and res.confidence < model.threshold:
                res = StanceResult(UNCLEAR, res.confidence, f"low confidence ({res.label} {res.confidence:.2f})")
            code = language if isinstance(language, str) else language[k]
            results[i] = res._replace(language=code, encoder=encoder, model_version=version)
