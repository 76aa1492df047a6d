"""Prompts typed into a form (the ``/prompt add`` modal): parsing and validation, no Discord.

A Discord modal holds at most five text inputs, so the labels share one paragraph input, one label per line::

    unfair: The U.S. carries an unfair share | Japan should pay more; we protect them for free
    fair: The deal is fair to both | Japan pays billions for the bases

``name: description`` and, after ``|``, examples separated by ``;``. Validation is
:func:`bot.core.prompts.prompt_from_dict`'s, so a prompt added here obeys the same rules as a prompt file.
"""

from __future__ import annotations

from typing import Any

from bot.core.errors import PromptError
from bot.core.prompts import Prompt, prompt_from_dict

LABELS_HELP = "one label per line: `name: description | example; another example`"
#: Discord's limit for one text input's value.
MAX_INPUT = 4000


def parse_label_lines(text: str) -> list[dict[str, Any]]:
    """Label tables from the label input; raises :class:`PromptError` naming every bad line."""
    labels: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            problems.append(f"line {number} has no `:`; write {LABELS_HELP}")
            continue
        name = name.strip().strip("`")
        if not name:
            problems.append(f"line {number}: the label name before `:` is empty")
            continue
        description, _, examples = rest.partition("|")
        labels.append(
            {
                "name": name,
                "description": description.strip(),
                "examples": [e.strip() for e in examples.split(";") if e.strip()],
            }
        )
    if problems:
        raise PromptError("Labels: " + "; ".join(problems) + ".")
    if not labels:
        raise PromptError(f"Labels: none given; write {LABELS_HELP}.")
    return labels


def prompt_from_form(*, name: str, title: str, question: str, context: str, labels: str, source: str = "") -> Prompt:
    """Validate the ``/prompt add`` form into a :class:`Prompt` (2-10 labels with ``unclear``, unique slugs)."""
    data = {
        "id": name.strip().lower(),
        "title": title,
        "question": question,
        "summary": context,
        "source": source,
        "labels": parse_label_lines(labels),
    }
    return prompt_from_dict(data, where=f"prompt {data['id']!r}")
