"""Tallies: how many counted stances each label has, and their shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TallyRow:
    """One label's line in a tally."""

    label: str
    count: int
    share: float


@dataclass(frozen=True)
class Tally:
    """Counts per label for one prompt in one guild; labels the prompt counts appear even at zero."""

    prompt_id: str
    labels: tuple[str, ...]
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """All counted stances."""
        return sum(self.counts.get(label, 0) for label in self.labels)

    def count(self, label: str) -> int:
        """The count for one label."""
        return self.counts.get(label, 0)

    def share(self, label: str) -> float:
        """The label's share of the total, 0 when nothing is counted yet."""
        total = self.total
        return self.count(label) / total if total else 0.0

    def rows(self) -> list[TallyRow]:
        """One row per label, in the prompt's label order."""
        return [TallyRow(label, self.count(label), self.share(label)) for label in self.labels]


def render_table(tally: Tally, *, bar_width: int = 20) -> str:
    """A monospace table with a bar per label (for terminals and Discord code blocks)."""
    width = max((len(label) for label in tally.labels), default=5)
    lines = [f"{'stance':<{width}}  {'count':>5}  {'share':>6}"]
    for row in tally.rows():
        bar = "█" * round(row.share * bar_width)
        lines.append(f"{row.label:<{width}}  {row.count:>5}  {row.share:>6.1%}  {bar}")
    lines.append(f"{'total':<{width}}  {tally.total:>5}")
    return "\n".join(lines)
