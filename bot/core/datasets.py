"""Labelled replies: load JSONL, check labels against a prompt, hash, and split once into train/dev/test.

A data file has one JSON object per line with at least ``text`` and ``label``; ``prompt``, ``source`` and ``tags``
(e.g. ``sarcasm``, ``negation``, ``ja``, ``other-lang``) are optional. The committed splits live in
``models/data/splits/<prompt>/{train,dev,test}.jsonl`` and are made once (``stancebot train --split``).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.assets import data_dir
from bot.core.errors import StancebotError
from bot.core.files import atomic_writer
from bot.core.prompts import Prompt

DATA_DIR = data_dir()
SPLITS_DIR = DATA_DIR / "splits"
#: The Japanese replies' splits (``ja/splits/<prompt>/{train,dev,test}.jsonl``), read by the multilingual heads.
JA_SPLITS_DIR = DATA_DIR / "ja" / "splits"
SPLITS = ("train", "dev", "test")
#: The seed every split and every training run uses.
SEED = 13
#: Tags whose replies the test split must hold enough of (issue 4: >= 40 per prompt).
HARD_TAGS = ("sarcasm", "negation")
#: Tags of replies not written in English.
FOREIGN_TAGS = ("ja", "other-lang")


class DataError(StancebotError):
    """A data file is missing, is not JSONL, or holds labels the prompt does not count."""


@dataclass(frozen=True)
class Example:
    """One labelled reply."""

    text: str
    label: str
    prompt: str = ""
    source: str = ""
    tags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form."""
        return {"text": self.text, "label": self.label, "prompt": self.prompt, "source": self.source,
                "tags": list(self.tags)}  # fmt: skip


def load_jsonl(path: Path) -> list[Example]:
    """Read a JSONL file of labelled replies; raises :class:`DataError` naming the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    out: list[Example] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path.name} line {number}: not JSON ({exc.msg}).") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not isinstance(row.get("label"), str):
            raise DataError(f"{path.name} line {number}: needs a 'text' and a 'label' (both text).")
        tags = row.get("tags") or []
        out.append(
            Example(
                text=row["text"],
                label=row["label"].strip(),
                prompt=str(row.get("prompt") or ""),
                source=str(row.get("source") or ""),
                tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            )
        )
    return out


def save_jsonl(path: Path, examples: Iterable[Example]) -> None:
    """Write examples as JSONL (UTF-8, one object per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        for ex in examples:
            fh.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")


def for_prompt(examples: Iterable[Example], prompt: Prompt, *, where: str = "data") -> list[Example]:
    """The examples of ``prompt`` (rows naming another prompt are dropped); raises on labels it does not count."""
    names = set(prompt.label_names)
    kept = [ex for ex in examples if not ex.prompt or ex.prompt == prompt.id]
    bad = sorted({ex.label for ex in kept if ex.label not in names})
    if bad:
        raise DataError(
            f"{where}: labels {', '.join(bad)} are not labels of prompt {prompt.id!r} "
            f"({', '.join(prompt.label_names)})."
        )
    return kept


def data_hash(examples: Iterable[Example]) -> str:
    """A short SHA-256 of the texts and labels, independent of their order."""
    rows = sorted(json.dumps([ex.text, ex.label], ensure_ascii=False) for ex in examples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


_NOT_WORD = re.compile(r"\W+")


def dedupe_key(text: str) -> str:
    """The form two replies share when they differ only in case, spacing and punctuation."""
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def _stratum(ex: Example) -> str:
    if any(t in FOREIGN_TAGS for t in ex.tags):
        return "foreign"
    if any(t in HARD_TAGS for t in ex.tags):
        return "hard"
    return "plain"


def split_examples(
    examples: Sequence[Example],
    *,
    seed: int = SEED,
    dev: float = 0.2,
    test: float = 0.2,
    min_hard_test: int = 40,
) -> dict[str, list[Example]]:
    """Split into train/dev/test, stratified by label and by kind (foreign language / sarcasm-negation / plain).

    Replies that differ only in case and punctuation stay in one split (no leak). When the test split holds fewer
    than ``min_hard_test`` sarcasm/negation replies, hard replies move there from train until it does (or train
    has none left).
    """
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[dedupe_key(ex.text)].append(ex)
    buckets: dict[tuple[str, str], list[list[Example]]] = defaultdict(list)
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda ex: (ex.text, ex.label, ex.tags))  # independent of file order
        groups[key] = members
        buckets[(members[0].label, _stratum(members[0]))].append(members)
    rng = random.Random(seed)
    parts: dict[str, list[list[Example]]] = {name: [] for name in SPLITS}
    for bucket_key in sorted(buckets):
        bucket = buckets[bucket_key]
        rng.shuffle(bucket)
        n = len(bucket)
        n_test = round(n * test)
        n_dev = round(n * dev)
        parts["test"] += bucket[:n_test]
        parts["dev"] += bucket[n_test : n_test + n_dev]
        parts["train"] += bucket[n_test + n_dev :]

    def hard(group: list[Example]) -> bool:
        return any(t in HARD_TAGS for t in group[0].tags)

    while sum(hard(g) for g in parts["test"]) < min_hard_test:
        movable = [g for g in parts["train"] if hard(g)]
        if not movable:
            break
        group = rng.choice(movable)
        parts["train"].remove(group)
        parts["test"].append(group)
        # keep the label balance: send a plain reply of the same label back to train
        same = [g for g in parts["test"] if not hard(g) and g[0].label == group[0].label and _stratum(g[0]) == "plain"]
        if same:
            back = rng.choice(same)
            parts["test"].remove(back)
            parts["train"].append(back)
    out: dict[str, list[Example]] = {}
    for name, grouped in parts.items():
        flat = [ex for group in grouped for ex in group]
        rng.shuffle(flat)
        out[name] = flat
    return out


def new_rows(examples: Sequence[Example], splits: dict[str, list[Example]]) -> list[Example]:
    """The examples not yet in any split (compared by :func:`dedupe_key`), in order, without near-duplicates."""
    seen = {dedupe_key(ex.text) for rows in splits.values() for ex in rows}
    out = []
    for ex in examples:
        key = dedupe_key(ex.text)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def extend_splits(
    examples: Sequence[Example], splits: dict[str, list[Example]], *, seed: int = SEED, dev: float = 0.2
) -> dict[str, list[Example]]:
    """Add the examples that are in no split yet to train and dev only; test never changes once made.

    The new rows are split like :func:`split_examples` (stratified by label and kind, fixed seed, near-duplicates
    kept together and out of the splits they already occur in) with no test share. Returns the extended splits.
    """
    fresh = new_rows(examples, splits)
    parts = split_examples(fresh, seed=seed, dev=dev, test=0.0, min_hard_test=0) if fresh else {}
    return {name: [*splits.get(name, []), *parts.get(name, [])] for name in SPLITS}


def split_dir(prompt_id: str, root: Path = SPLITS_DIR) -> Path:
    """Where a prompt's committed splits live."""
    return root / prompt_id


def write_splits(prompt_id: str, splits: dict[str, list[Example]], root: Path = SPLITS_DIR) -> Path:
    """Write ``train/dev/test.jsonl`` for a prompt; returns the folder."""
    folder = split_dir(prompt_id, root)
    for name in SPLITS:
        save_jsonl(folder / f"{name}.jsonl", splits.get(name, []))
    return folder


def load_split(prompt: Prompt, name: str, root: Path = SPLITS_DIR) -> list[Example]:
    """A committed split of a prompt, checked against its labels; raises :class:`DataError` if it is missing."""
    path = split_dir(prompt.id, root) / f"{name}.jsonl"
    if not path.is_file():
        raise DataError(
            f"No {name} split for prompt {prompt.id!r} at {path}; make the splits with `stancebot train --split`."
        )
    return for_prompt(load_jsonl(path), prompt, where=str(path))


def has_splits(prompt_id: str, root: Path = SPLITS_DIR) -> bool:
    """True when all three split files of a prompt exist."""
    return all((split_dir(prompt_id, root) / f"{name}.jsonl").is_file() for name in SPLITS)


#: Real-world statements per seed prompt (paraphrased, with their source pages), split once by page into
#: ``real-dev`` (choices may be made on it) and ``real-test`` (never used for a choice).
REAL_DIR = DATA_DIR / "real"
#: Training paraphrases of real public statements, from pages outside the real-world evaluation sets.
REALTRAIN_DIR = DATA_DIR / "realtrain"
REAL_SPLITS = ("real-dev", "real-test")


def load_real(prompt: Prompt, split: str) -> list[Example]:
    """One split of a prompt's real-world statements (empty when the prompt has none)."""
    path = REAL_DIR / f"{prompt.id}.jsonl"
    if split not in REAL_SPLITS:
        raise ValueError(f"split must be one of {', '.join(REAL_SPLITS)}")
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    keep = [Example(r["text"], r["label"], prompt.id, r.get("source", ""), (r.get("kind") or "real",))
            for r in rows if r.get("split") == split]  # fmt: skip
    return for_prompt(keep, prompt, where=str(path))


def raw_data_path(prompt_id: str) -> Path:
    """The labelled data file a prompt's splits are made from: ``models/data/<prompt>.jsonl``."""
    return DATA_DIR / f"{prompt_id}.jsonl"


def tag_counts(examples: Iterable[Example]) -> dict[str, int]:
    """How many examples carry each tag."""
    counts: dict[str, int] = defaultdict(int)
    for ex in examples:
        for tag in set(ex.tags):
            counts[tag] += 1
    return dict(sorted(counts.items()))
