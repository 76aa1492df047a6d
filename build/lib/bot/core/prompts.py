"""Prompts are data: a question, its context and the stance labels it counts, loaded from TOML files."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.errors import PromptError, UnknownPromptError

#: The label every prompt has for replies that take no stance (off-topic, questions, low confidence).
UNCLEAR = "unclear"

SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
MIN_LABELS = 2
MAX_LABELS = 10
# Limits chosen so that a prompt always renders within Discord's embed limits (title 256, field 1024, total 6000).
MAX_TITLE = 100
MAX_QUESTION = 300
MAX_SUMMARY = 1000
MAX_SOURCE = 300
MAX_DESCRIPTION = 200
MAX_EXAMPLES = 12
MAX_EXAMPLE = 300


@dataclass(frozen=True)
class StanceLabel:
    """One stance a prompt counts: a slug name, a one-line description and example replies."""

    name: str
    description: str
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prompt:
    """A discussion prompt: the question members answer and the stance labels their replies get."""

    id: str
    title: str
    question: str
    summary: str
    labels: tuple[StanceLabel, ...]
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label_names(self) -> tuple[str, ...]:
        """All label names, ``unclear`` included."""
        return tuple(label.name for label in self.labels)

    @property
    def stance_labels(self) -> tuple[StanceLabel, ...]:
        """The labels that are a stance (everything but ``unclear``)."""
        return tuple(label for label in self.labels if label.name != UNCLEAR)

    def label(self, name: str) -> StanceLabel:
        """The label called ``name``; raises :class:`PromptError` if the prompt has none."""
        for label in self.labels:
            if label.name == name:
                return label
        raise PromptError(f"Prompt {self.id!r} has no label {name!r}; it counts {', '.join(self.label_names)}.")

    def to_dict(self) -> dict[str, Any]:
        """A plain-data form (for TOML/JSON export and the database)."""
        return {
            "id": self.id,
            "title": self.title,
            "question": self.question,
            "summary": self.summary,
            "source": self.source,
            "labels": [
                {"name": lb.name, "description": lb.description, "examples": list(lb.examples)} for lb in self.labels
            ],
        }


def _text(data: Mapping[str, Any], key: str, limit: int, *, where: str, required: bool = True) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise PromptError(f"{where}: {key!r} must be text.")
    value = value.strip()
    if required and not value:
        raise PromptError(f"{where}: {key!r} is empty.")
    if len(value) > limit:
        raise PromptError(f"{where}: {key!r} is {len(value)} characters; the limit is {limit}.")
    return value


def _label(data: Any, *, where: str) -> StanceLabel:
    if not isinstance(data, Mapping):
        raise PromptError(f"{where}: each label must be a table with name, description and examples.")
    name = _text(data, "name", 32, where=where)
    if not SLUG_RE.match(name):
        raise PromptError(
            f"{where}: label name {name!r} must be 2-32 characters of lowercase letters, digits and '_', "
            "starting with a letter."
        )
    description = _text(data, "description", MAX_DESCRIPTION, where=f"{where} label {name!r}")
    examples_raw = data.get("examples", [])
    if not isinstance(examples_raw, list) or not all(isinstance(e, str) for e in examples_raw):
        raise PromptError(f"{where} label {name!r}: 'examples' must be a list of texts.")
    examples = tuple(e.strip() for e in examples_raw if e.strip())
    if len(examples) > MAX_EXAMPLES:
        raise PromptError(f"{where} label {name!r}: at most {MAX_EXAMPLES} examples.")
    for example in examples:
        if len(example) > MAX_EXAMPLE:
            raise PromptError(f"{where} label {name!r}: an example is longer than {MAX_EXAMPLE} characters.")
    return StanceLabel(name=name, description=description, examples=examples)


def prompt_from_dict(data: Mapping[str, Any], *, where: str = "prompt") -> Prompt:
    """Validate plain data (from TOML, JSON, the database or a Discord modal) into a :class:`Prompt`.

    Adds an ``unclear`` label when the data has none. Raises :class:`PromptError` naming what is wrong.
    """
    prompt_id = _text(data, "id", 32, where=where)
    if not SLUG_RE.match(prompt_id):
        raise PromptError(f"{where}: id {prompt_id!r} must be 2-32 characters of lowercase letters, digits and '_'.")
    where = f"prompt {prompt_id!r}"
    raw_labels = data.get("labels")
    if not isinstance(raw_labels, list):
        raise PromptError(f"{where}: 'labels' must be a list of label tables.")
    labels = [_label(item, where=where) for item in raw_labels]
    names = [label.name for label in labels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PromptError(f"{where}: duplicate label names: {', '.join(duplicates)}.")
    if UNCLEAR not in names:
        labels.append(StanceLabel(UNCLEAR, "No stance on the question: off-topic, a bare question, or mixed."))
    if not MIN_LABELS <= len(labels) <= MAX_LABELS:
        raise PromptError(
            f"{where}: has {len(labels)} labels (unclear included); a prompt needs {MIN_LABELS} to {MAX_LABELS}."
        )
    if len(labels) - 1 < 1:
        raise PromptError(f"{where}: needs at least one stance label besides 'unclear'.")
    extra = {k: v for k, v in data.items() if k not in {"id", "title", "question", "summary", "source", "labels"}}
    return Prompt(
        id=prompt_id,
        title=_text(data, "title", MAX_TITLE, where=where),
        question=_text(data, "question", MAX_QUESTION, where=where),
        summary=_text(data, "summary", MAX_SUMMARY, where=where),
        source=_text(data, "source", MAX_SOURCE, where=where, required=False),
        labels=tuple(labels),
        extra=extra,
    )


def load_prompt(path: Path) -> Prompt:
    """Load one prompt from a TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PromptError(f"{path.name}: not valid TOML ({exc}).") from exc
    except OSError as exc:
        raise PromptError(f"{path}: cannot be read ({exc.strerror}).") from exc
    return prompt_from_dict(data, where=path.name)


#: Who owns a prompt: ``None`` for a seed prompt (a file, usable in every server), else the guild that added it.
Owner = int | None


class PromptCatalog:
    """The prompts a bot knows: seed prompts (from files, global) and the prompts each guild added for itself.

    A guild sees the seed prompts and its own, never another guild's: two guilds may each add a prompt with the same
    name. A guild's prompt never shadows a seed prompt of the same name (the seed prompt wins).
    """

    def __init__(self, prompts: Iterable[Prompt] = ()) -> None:
        self._prompts: dict[Owner, dict[str, Prompt]] = {None: {}}
        for prompt in prompts:
            self.add(prompt)

    @classmethod
    def from_dir(cls, directory: Path) -> PromptCatalog:
        """Load every ``*.toml`` file in ``directory`` as a seed prompt."""
        if not directory.is_dir():
            raise PromptError(f"Prompt folder {directory} does not exist.")
        return cls(load_prompt(path) for path in sorted(directory.glob("*.toml")))

    def add(self, prompt: Prompt, guild_id: Owner = None) -> None:
        """Add or replace a seed prompt (``guild_id`` ``None``) or a guild's own prompt."""
        self._prompts.setdefault(guild_id, {})[prompt.id] = prompt

    def owner(self, prompt_id: str, guild_id: Owner = None) -> Owner:
        """Whose prompt ``prompt_id`` is as ``guild_id`` sees it: ``None`` (a seed prompt) or ``guild_id``; raises
        :class:`UnknownPromptError` listing what the guild can use."""
        if prompt_id in self._prompts[None]:
            return None
        if guild_id is not None and prompt_id in self._prompts.get(guild_id, {}):
            return guild_id
        raise UnknownPromptError(prompt_id, [p.id for p in self.for_guild(guild_id)])

    def get(self, prompt_id: str, guild_id: Owner = None) -> Prompt:
        """The prompt with this id as ``guild_id`` sees it (a seed prompt or the guild's own); raises
        :class:`UnknownPromptError` listing the ones it can use."""
        return self._prompts[self.owner(prompt_id, guild_id)][prompt_id]

    def visible(self, prompt_id: str, guild_id: Owner = None) -> bool:
        """Whether ``guild_id`` can use a prompt called ``prompt_id``."""
        return prompt_id in self._prompts[None] or prompt_id in self._prompts.get(guild_id, {})

    def for_guild(self, guild_id: Owner) -> list[Prompt]:
        """The prompts a guild can use (seed prompts and its own), sorted by id."""
        merged = dict(self._prompts.get(guild_id, {})) if guild_id is not None else {}
        merged.update(self._prompts[None])
        return [merged[k] for k in sorted(merged)]

    def ids(self) -> list[str]:
        """The seed prompts' ids, sorted."""
        return sorted(self._prompts[None])

    def __iter__(self) -> Iterator[Prompt]:
        """The seed prompts, by id."""
        return iter(self._prompts[None][k] for k in self.ids())

    def __len__(self) -> int:
        return len(self._prompts[None])

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._prompts[None]
