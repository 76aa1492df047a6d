"""Which model serves a prompt: its trained model when there is one, else the similarity baseline.

On ONNX Runtime the trained models come from a :class:`~bot.core.shipped.ModelLibrary` (a local build, then the
models shipped in the package); on torch, from the training build folders (``models/build/<prompt>``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bot.core import trained
from bot.core.encoder import SentenceEncoder
from bot.core.general import GeneralModel
from bot.core.multilingual import LANGUAGES, MultilingualClassifier, MultilingualEncoder, head_name, load_head
from bot.core.prompts import Prompt
from bot.core.shipped import ModelLibrary
from bot.core.stance import GatedClassifier, SimilarityClassifier, StanceClassifier

log = logging.getLogger(__name__)

#: The manifest name of the general model.
GENERAL = "general"


@dataclass
class ModelRegistry:
    """Builds each prompt's classifier; ``encoder`` is the shared base encoder (the similarity baseline's)."""

    encoder: SentenceEncoder
    library: ModelLibrary | None = None
    build_dir: Path | None = None
    threshold: float = 0.5
    max_chars: int = 2000
    #: Read replies in other languages with the multilingual heads (when the prompt has one).
    multilingual: bool = True

    def __post_init__(self) -> None:
        self._general: GeneralModel | None = None
        self._general_loaded = False
        self._multilingual_encoder: MultilingualEncoder | None = None

    def multilingual_encoder(self) -> MultilingualEncoder:
        """The multilingual encoder, shared by every prompt's head (loaded on its first reply, or at warm-up)."""
        if self._multilingual_encoder is None:
            self._multilingual_encoder = MultilingualEncoder(threads=1)
        return self._multilingual_encoder

    def multilingual_model(self, prompt: Prompt) -> MultilingualClassifier | None:
        """The prompt's multilingual head, or ``None`` (none shipped for its labels, or the path is off)."""
        if not self.multilingual or self.library is None:
            return None
        found = self.library.find(head_name(prompt.id), prompt.label_names)
        if found is None:
            return None
        return load_head(*found, self.multilingual_encoder())

    def general_model(self) -> GeneralModel | None:
        """The general model (reads any prompt's labels), loaded on first use; ``None`` when none is shipped."""
        if not self._general_loaded:
            self._general_loaded = True
            found = self.library.find(GENERAL) if self.library is not None else None
            if found is not None:
                store, entry = found
                self._general = GeneralModel(
                    entry.weights,
                    store.tokenizer_dir / "tokenizer.json",
                    version=entry.version,
                    temperature=float(entry.config.get("temperature", 1.0)),
                    threshold=float(entry.config.get("threshold", 0.0)),
                    sessions=self.encoder.sessions,
                    threads=self.encoder.threads,
                )
        return self._general

    def trained_model(self, prompt: Prompt) -> trained.HeadClassifier | None:
        """The prompt's trained model, or ``None`` when it has none (or none for its labels)."""
        if self.library is not None:
            found = self.library.find(prompt.id, prompt.label_names)
            if found is not None:
                return trained.load_shipped(*found, self.encoder)
        if self.build_dir is not None:
            return trained.load_if_present(self.build_dir / prompt.id, prompt, self.encoder)
        return None

    def classifier(self, prompt: Prompt) -> GatedClassifier:
        """The best model for ``prompt``, wrapped in the checks every reply gets."""
        inner: StanceClassifier
        model = self.trained_model(prompt)
        general = self.general_model() if model is None else None
        if model is not None:
            inner = model
            log.info("Prompt %s: using trained model %s", prompt.id, model.version)
        elif general is not None:
            inner = general.for_prompt(prompt)
            log.info("Prompt %s: using the general model %s", prompt.id, inner.version)
        else:
            inner = SimilarityClassifier(prompt, self.encoder, threshold=self.threshold)
            log.info("Prompt %s: no trained model, using the similarity baseline", prompt.id)
        return self.gate(inner, prompt)

    def gate(self, inner: StanceClassifier, prompt: Prompt) -> GatedClassifier:
        """``inner`` (the English model) in the checks every reply gets, with the prompt's multilingual head for
        replies in other languages when it has one (its encoder is loaded here, so call this off the event loop)."""
        other = self.multilingual_model(prompt)
        if other is not None:
            other.encoder.load()
            log.info("Prompt %s: replies in other languages use %s", prompt.id, other.version)
        return GatedClassifier(
            inner,
            max_chars=self.max_chars,
            multilingual=other,
            languages=LANGUAGES - {"en"} if other is not None else frozenset(),
        )
