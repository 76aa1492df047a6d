"""The counting rules: which of a member's stances the tally counts. Pure functions, no storage, no Discord.

For one member on one prompt in one guild:

* ``member`` mode (the default): the member's latest live reply that takes a stance counts once; a member whose
  live replies are all ``unclear`` counts once as ``unclear``; a member with no live classified reply counts zero.
* ``reply`` mode: every live classified reply counts.
* A declared stance (the buttons on the prompt message) replaces all of the above for that member when declared
  stances override the model; otherwise it is shown beside the tally and never counted.
* A member who opted out counts zero.

"Latest" orders replies by when they were written (then by message id); an edit does not move a reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.core.prompts import UNCLEAR

CountMode = Literal["member", "reply"]


@dataclass(frozen=True)
class LiveStance:
    """The current stance of one of the member's live (not deleted) replies."""

    stance_id: int
    label: str
    written_at: datetime
    message_id: int


@dataclass(frozen=True)
class CountingRules:
    """How a guild's tally counts: ``mode`` and whether a declared stance overrides the model."""

    mode: CountMode = "member"
    declared_overrides: bool = True


@dataclass(frozen=True)
class MemberCount:
    """What counts for one member: stance ids, whether the declared stance counts, and the model's pick."""

    stance_ids: tuple[int, ...]
    declared_counts: bool
    model_label: str | None


def latest_first(stances: Sequence[LiveStance]) -> list[LiveStance]:
    """The stances ordered newest reply first."""
    return sorted(stances, key=lambda s: (s.written_at, s.message_id), reverse=True)


def model_choice(stances: Sequence[LiveStance]) -> LiveStance | None:
    """The stance member mode counts: the latest one that is not ``unclear``, else the latest one."""
    ordered = latest_first(stances)
    return next((s for s in ordered if s.label != UNCLEAR), ordered[0] if ordered else None)


def count_member(
    stances: Sequence[LiveStance], *, rules: CountingRules, declared: str | None = None, opted_out: bool = False
) -> MemberCount:
    """Apply the counting rules to one member's live stances (see the module docstring)."""
    chosen = model_choice(stances)
    model_label = chosen.label if chosen is not None else None
    if opted_out:
        return MemberCount((), False, model_label)
    if declared is not None and rules.declared_overrides:
        return MemberCount((), True, model_label)
    if rules.mode == "reply":
        return MemberCount(tuple(s.stance_id for s in latest_first(stances)), False, model_label)
    return MemberCount((chosen.stance_id,) if chosen is not None else (), False, model_label)


@dataclass(frozen=True)
class Comparison:
    """Declared stances beside the model's, for one prompt in one guild."""

    labels: tuple[str, ...]
    model: dict[str, int]
    declared: dict[str, int]
    both: int
    agree: int

    @property
    def agreement(self) -> float | None:
        """How often a member's declared stance equals the model's, among members with both (``None``: none)."""
        return self.agree / self.both if self.both else None

    def rows(self) -> list[tuple[str, int, int]]:
        """``(label, model count, declared count)`` in the prompt's label order."""
        return [(label, self.model.get(label, 0), self.declared.get(label, 0)) for label in self.labels]


def render_comparison(comparison: Comparison) -> str:
    """A monospace table of model vs declared counts and the agreement rate."""
    width = max((len(label) for label in comparison.labels), default=5)
    lines = [f"{'stance':<{width}}  {'model':>5}  {'declared':>8}"]
    for label, model, declared in comparison.rows():
        lines.append(f"{label:<{width}}  {model:>5}  {declared:>8}")
    rate = comparison.agreement
    agreement = "n/a" if rate is None else f"{rate:.0%} of {comparison.both}"
    lines.append(f"agree: {agreement}")
    return "\n".join(lines)
