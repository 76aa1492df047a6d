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

    def __post_init__(self) -> None:
        self._general: GeneralModel | None = None
        self._general_loaded = False

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
        return GatedClassifier(inner, max_chars=self.max_chars)
