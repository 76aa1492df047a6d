"""A stance digest for one prompt in one guild: pure data built from plain numbers, and its text renderings.

What the numbers mean (the storage layer computes them this way, see :mod:`bot.storage.digests`):

* **This period's stances** ("voices"): the counting rule of the tally applied to the replies written in the
  period only. By default each member counts once, with their latest reply of the period that takes a stance (or
  ``unclear`` when none does); with ``count_mode = "reply"`` every reply counts. The change since the previous
  period compares these shares, in percentage points, so it says how the discussion moved, not how many people
  joined. Members who opted out are left out.
* **Activity**: replies written in the period (deleted ones left out), the distinct members who wrote them, how
  many of those replies the model could not place (``unclear``), and how many a model read in another language
  than English (the multilingual path).
* **Overall tally**: what ``/stance tally`` shows when the digest is made (every period, declared stances
  included).
* **Declared stances**: members who declared a stance with the prompt's buttons, beside what the model says of
  the same members, and how often the two agree (shown only when someone declared).
* **Representative reply** per stance: among the period's replies that the tally counts, the one of that stance the
  model is most confident about.

Nothing here knows Discord or SQL; :mod:`bot.cogs.digest` renders the embed, :mod:`bot.core.chart` the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.counting import Comparison
from bot.core.periods import Period
from bot.core.prompts import UNCLEAR
from bot.core.text import neutralise_mentions, shorten

#: How long a quote may be in any rendering.
QUOTE_CHARS = 300


@dataclass(frozen=True)
class PeriodFigures:
    """The numbers for one period: its stances (counted as the tally counts, within the period) and activity."""

    period: Period
    counts: Mapping[str, int]
    replies: int = 0
    members: int = 0
    classified: int = 0
    unclear: int = 0
    #: Replies whose current stance a model gave reading them in another language than English.
    other_language: int = 0

    @property
    def counted(self) -> int:
        """Stances counted in the period."""
        return sum(self.counts.values())

    def share(self, label: str) -> float:
        """``label``'s share of the period's counted stances (0 when nothing is counted)."""
        total = self.counted
        return self.counts.get(label, 0) / total if total else 0.0

    @property
    def unclear_share(self) -> float:
        """Share of the period's classified replies that are ``unclear``."""
        return self.unclear / self.classified if self.classified else 0.0


@dataclass(frozen=True)
class Quote:
    """A representative reply: its stance, text, the model's confidence and where to find it."""

    label: str
    text: str
    confidence: float
    author_id: int
    message_id: int
    channel_id: int
    created_at: datetime
    author_name: str = ""

    def safe_text(self, limit: int = QUOTE_CHARS) -> str:
        """The text on one line, mentions neutralised, cut to ``limit`` characters."""
        return shorten(" ".join(neutralise_mentions(self.text).split()), limit)


@dataclass(frozen=True)
class LabelLine:
    """One stance's line: count and share now, before, and the change in percentage points."""

    label: str
    count: int
    share: float
    previous_count: int
    previous_share: float

    @property
    def delta_pts(self) -> float:
        """Change of share in percentage points."""
        return (self.share - self.previous_share) * 100


@dataclass(frozen=True)
class Digest:
    """Everything a digest shows. ``history`` is oldest first; its last entry is the period the digest covers."""

    prompt_id: str
    title: str
    question: str
    guild_id: int
    labels: tuple[str, ...]
    history: tuple[PeriodFigures, ...]
    quotes: tuple[Quote, ...] = ()
    overall: Mapping[str, int] = field(default_factory=dict)
    generated_at: datetime | None = None
    late: bool = False
    model_note: str = ""
    #: Declared stances beside the model's (``None``: nobody declared one).
    declared: Comparison | None = None

    def __post_init__(self) -> None:
        if not self.history:
            raise ValueError("a digest needs at least the period it covers")

    @property
    def current(self) -> PeriodFigures:
        """The period the digest covers."""
        return self.history[-1]

    @property
    def previous(self) -> PeriodFigures | None:
        """The period before, when known."""
        return self.history[-2] if len(self.history) > 1 else None

    @property
    def comparable(self) -> bool:
        """Whether the previous period counted anything to compare shares with."""
        return self.previous is not None and self.previous.counted > 0

    @property
    def period(self) -> Period:
        """The period covered."""
        return self.current.period

    @property
    def heading(self) -> str:
        """E.g. ``Weekly digest: Is the alliance unfair?``."""
        return f"{self.period.kind.capitalize()} digest: {self.title}"

    def lines(self) -> list[LabelLine]:
        """One line per label, in the prompt's order."""
        prev = self.previous
        return [
            LabelLine(
                label,
                self.current.counts.get(label, 0),
                self.current.share(label),
                prev.counts.get(label, 0) if prev else 0,
                prev.share(label) if prev else 0.0,
            )
            for label in self.labels
        ]

    def trend(self) -> tuple[PeriodFigures, ...]:
        """The history from the first period with any reply (at least the last two periods)."""
        first = next((i for i, f in enumerate(self.history) if f.replies or f.counted), len(self.history))
        return self.history[min(first, max(len(self.history) - 2, 0)) :]

    def quote_for(self, label: str) -> Quote | None:
        """The representative reply of ``label``, if the period has one."""
        return next((q for q in self.quotes if q.label == label), None)

    def stance_labels(self) -> tuple[str, ...]:
        """Labels that are a stance (all but ``unclear``)."""
        return tuple(label for label in self.labels if label != UNCLEAR)

    def activity_sentence(self) -> str:
        """E.g. ``123 replies from 45 members this week (+20 vs last week); 6 read in another language; 8% of the
        replies unclear`` (the other-language part only when there were some)."""
        cur, prev, period = self.current, self.previous, self.period
        replies = f"{cur.replies} repl{'y' if cur.replies == 1 else 'ies'}"
        members = f"{cur.members} member{'' if cur.members == 1 else 's'}"
        text = f"{replies} from {members} {period.this}"
        if prev is not None:
            text += f" ({signed(cur.replies - prev.replies)} vs {period.last})"
        if cur.other_language:
            text += f"; {cur.other_language} read in another language"
        if cur.classified:
            text += f"; {cur.unclear_share:.0%} of the replies unclear"
        return text

    def leader_sentence(self) -> str:
        """E.g. ``This week: unfair leads with 40% of 45 members``."""
        return _leader(self.period.this.capitalize(), self.current.counts, self.stance_labels(), self.labels)

    @property
    def overall_total(self) -> int:
        """Everything the overall tally counts."""
        return sum(self.overall.get(label, 0) for label in self.labels)

    def overall_sentence(self) -> str:
        """E.g. ``Overall tally: fair leads with 53% of 312 counted``."""
        return _leader("Overall tally", self.overall, self.stance_labels(), self.labels)

    def declared_sentence(self) -> str:
        """E.g. ``Declared with the buttons: fair 5, unfair 3 (8 members); the model agrees for 4 of 6 (67%)``;
        empty when nobody declared a stance."""
        comparison = self.declared
        if comparison is None or not any(comparison.declared.values()):
            return ""
        counts = [(label, comparison.declared.get(label, 0)) for label in self.labels]
        listed = ", ".join(f"{label} {n}" for label, n in counts if n)
        members = sum(n for _, n in counts)
        text = f"Declared with the buttons: {listed} ({members} member{'' if members == 1 else 's'})"
        rate = comparison.agreement
        if rate is None:
            return text + "; the model has not read a reply of theirs yet"
        return text + f"; the model agrees for {comparison.agree} of {comparison.both} ({rate:.0%})"


def _leader(what: str, counts: Mapping[str, int], stances: Sequence[str], labels: Sequence[str]) -> str:
    total = sum(counts.get(label, 0) for label in labels)
    if not total:
        return f"{what}: no stance counted yet"
    ranked = sorted(stances, key=lambda lb: (-counts.get(lb, 0), labels.index(lb)))
    if not ranked or counts.get(ranked[0], 0) == 0:
        return f"{what}: nobody took a stance ({total} unclear)"
    best = counts.get(ranked[0], 0)
    tied = [lb for lb in ranked if counts.get(lb, 0) == best]
    lead = f"{' and '.join(tied)} tie at" if len(tied) > 1 else f"{tied[0]} leads with"
    return f"{what}: {lead} {best / total:.0%} of {total} counted"


def signed(value: int) -> str:
    """``+3``, ``-2`` or ``±0``."""
    return f"{value:+d}" if value else "±0"


def arrow(delta_pts: float) -> str:
    """``▲ 5.0 pts``, ``▼ 2.5 pts`` or ``= 0.0 pts`` (changes under 0.05 points are no change)."""
    if abs(delta_pts) < 0.05:
        return "= 0.0 pts"
    return f"{'▲' if delta_pts > 0 else '▼'} {abs(delta_pts):.1f} pts"


def standings_table(digest: Digest, *, bar_width: int = 16, with_previous: bool = True) -> str:
    """A monospace table: stance, count, share, change since the previous period and a bar."""
    width = max([len(label) for label in digest.labels] + [6])
    has_prev = with_previous and digest.comparable
    head = f"{'stance':<{width}}  {'count':>5}  {'share':>6}"
    if has_prev:
        head += f"  {'vs ' + digest.period.last:>13}"
    rows = [head]
    for line in digest.lines():
        row = f"{line.label:<{width}}  {line.count:>5}  {line.share:>6.1%}"
        if has_prev:
            row += f"  {arrow(line.delta_pts):>13}"
        rows.append(row + "  " + "█" * round(line.share * bar_width))
    rows.append(f"{'total':<{width}}  {digest.current.counted:>5}")
    return "\n".join(rows)


def trend_table(digest: Digest) -> str:
    """Shares at the end of each period in the history, one row per period (monospace)."""
    cols = [max(len(label), 5) for label in digest.labels]
    head = f"{digest.period.noun:<8}" + "".join(f"  {lb:>{w}}" for lb, w in zip(digest.labels, cols, strict=True))
    rows = [head + "  counted"]
    for fig in digest.trend():
        cells = "".join(
            f"  {fig.share(lb):>{w}.0%}" if fig.counted else f"  {'-':>{w}}"
            for lb, w in zip(digest.labels, cols, strict=True)
        )
        rows.append(f"{fig.period.short_label():<8}{cells}  {fig.counted:>7}")
    return "\n".join(rows)


def _late_note(digest: Digest) -> str:
    due = digest.period.local_end()
    return f"Posted late: the bot was offline when this digest was due ({due:%a %d %b %H:%M})."


def render_terminal(digest: Digest) -> str:
    """The digest as plain text for a terminal (monospace tables, quotes neutralised)."""
    out = [digest.heading, f"[{digest.prompt_id}] {digest.question}", digest.period.describe()]
    if digest.late:
        out.append(_late_note(digest))
    out += ["", digest.activity_sentence() + ".", digest.leader_sentence() + ".", "", standings_table(digest)]
    out += ["", digest.overall_sentence() + "."]
    if digest.declared_sentence():
        out.append(digest.declared_sentence() + ".")
    quotes = [q for q in (digest.quote_for(label) for label in digest.stance_labels()) if q is not None]
    if quotes:
        out += ["", f"Most confident replies {digest.period.this}"]
        for q in quotes:
            who = f" ({q.author_name})" if q.author_name else ""
            out.append(f'  {q.label} {q.confidence:.2f}{who}: "{q.safe_text()}"')
    if len(digest.trend()) > 2:
        out += ["", f"Trend (shares of each {digest.period.noun}'s stances)", trend_table(digest)]
    if digest.model_note:
        out += ["", digest.model_note]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(digest: Digest, *, chart: str | None = "chart.png") -> str:
    """The digest as Markdown (``digest.md`` of ``stancebot analyze``), with the chart image linked."""
    out = [f"# {_md_cell(digest.heading)}", "", f"**{digest.question}** (`{digest.prompt_id}`)", ""]
    out.append(f"*{digest.period.describe()}*")
    if digest.late:
        out += ["", f"> {_late_note(digest)}"]
    out += ["", f"{digest.activity_sentence()}. {digest.leader_sentence()}.", ""]
    has_prev = digest.comparable
    out.append("| stance | count | share |" + (f" vs {digest.period.last} |" if has_prev else ""))
    out.append("|---|---:|---:|" + ("---:|" if has_prev else ""))
    for line in digest.lines():
        row = f"| `{line.label}` | {line.count} | {line.share:.1%} |"
        out.append(row + (f" {arrow(line.delta_pts)} |" if has_prev else ""))
    out.append(f"| **total** | {digest.current.counted} | |" + (" |" if has_prev else ""))
    out += ["", f"{digest.overall_sentence()}."]
    if digest.declared_sentence():
        out += ["", f"{digest.declared_sentence()}."]
    if chart:
        out += ["", f"![Stance shares {digest.period.this} and the trend]({chart})"]
    quotes = [q for q in (digest.quote_for(label) for label in digest.stance_labels()) if q is not None]
    if quotes:
        out += ["", f"## Most confident replies {digest.period.this}", ""]
        for q in quotes:
            who = f" · {q.author_name}" if q.author_name else ""
            out += [f"**`{q.label}`** ({q.confidence:.2f}{who})", "", f"> {q.safe_text()}", ""]
    if len(digest.trend()) > 2:
        out += ["## Trend" if quotes else "\n## Trend", "", f"Shares of each {digest.period.noun}'s stances.", ""]
        out.append(f"| {digest.period.noun} | " + " | ".join(f"`{lb}`" for lb in digest.labels) + " | counted |")
        out.append("|---|" + "---:|" * (len(digest.labels) + 1))
        for fig in digest.trend():
            cells = " | ".join(f"{fig.share(lb):.0%}" if fig.counted else "-" for lb in digest.labels)
            out.append(f"| {fig.period.short_label()} | {cells} | {fig.counted} |")
    if digest.model_note:
        out += ["", f"*{digest.model_note}*"]
    return "\n".join(out).rstrip() + "\n"


def build_digest(
    *,
    prompt_id: str,
    title: str,
    question: str,
    guild_id: int,
    labels: Sequence[str],
    history: Sequence[PeriodFigures],
    quotes: Sequence[Quote] = (),
    overall: Mapping[str, int] | None = None,
    generated_at: datetime | None = None,
    late: bool = False,
    model_note: str = "",
    declared: Comparison | None = None,
) -> Digest:
    """A :class:`Digest`; quotes are kept one per stance label, in label order."""
    by_label = {q.label: q for q in quotes if q.label in labels and q.label != UNCLEAR}
    return Digest(
        prompt_id=prompt_id,
        title=title,
        question=question,
        guild_id=guild_id,
        labels=tuple(labels),
        history=tuple(history),
        quotes=tuple(by_label[label] for label in labels if label in by_label),
        overall=dict(overall or {}),
        generated_at=generated_at,
        late=late,
        model_note=model_note,
        declared=declared if declared is not None and any(declared.declared.values()) else None,
    )
