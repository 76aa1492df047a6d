"""Learning from the server: when a prompt's labels call for a new head, training it, and the switch rule.

Members' declared stances and moderators' relabels and review decisions label a prompt's replies. Once a prompt
has :attr:`LearningPolicy.min_labels` of them, and again every :attr:`LearningPolicy.step` more, a head is trained
on top of the base that serves the prompt (:mod:`bot.core.adapt`) and measured on labels its fits never saw; it
replaces what serves the prompt only when it is better (:func:`bot.core.adapt.compare`). :func:`train` is
synchronous numpy work for a worker thread; storage and scheduling live in :mod:`bot.pipeline.learning`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.core import adapt
from bot.core.stance import StanceClassifier, StanceFeatures

#: Sources of a label, as :class:`LabelledReply` names them.
DECLARED, RELABEL, REVIEW = "declared", "relabel", "review"


@dataclass(frozen=True)
class LearningPolicy:
    """When a prompt's head is (re)trained: at ``min_labels`` labelled replies, then every ``step`` more."""

    enabled: bool = True
    min_labels: int = adapt.MIN_LABELS
    step: int = 20

    def due(self, labels: int, last_trained_on: int | None) -> bool:
        """Whether ``labels`` labelled replies call for a training, the last one having used ``last_trained_on``
        (``None``: never trained)."""
        if not self.enabled or labels < self.min_labels:
            return False
        return last_trained_on is None or labels >= last_trained_on + max(1, self.step)


@dataclass(frozen=True)
class LabelledReply:
    """One reply of a prompt with the label the server gave it, where from and when."""

    reply_id: int
    text: str
    label: str
    source: str
    labelled_at: datetime


@dataclass
class TrainingOutcome:
    """A trained head, its figures (see :func:`bot.core.adapt.compare`), whether it should serve, and how long
    the training took."""

    head: adapt.PromptHead
    figures: dict[str, Any]
    switch: bool
    seconds: float

    @property
    def summary(self) -> str:
        """The figures in one line (logs, the audit log)."""
        f = self.figures
        text = f"k-fold macro-F1 head {f['head_macro_f1']:.3f} vs base {f['base_macro_f1']:.3f} on {f['n']} labels"
        if f.get("current_fresh_macro_f1") is not None:
            text += (
                f"; on {f['n_fresh']} new labels head {f['head_fresh_macro_f1']:.3f}"
                f" vs current {f['current_fresh_macro_f1']:.3f}"
            )
        return text


def split_served(model: StanceClassifier) -> tuple[StanceFeatures | None, adapt.AdaptedClassifier | None]:
    """The base a head can learn on (``None`` for a prompt's own trained model) and the head serving now, if any;
    ``model`` may be wrapped in a :class:`bot.core.stance.GatedClassifier`."""
    inner = getattr(model, "inner", model)
    if isinstance(inner, adapt.AdaptedClassifier):
        return inner.base, inner
    if isinstance(inner, StanceFeatures):
        return inner, None
    return None, None


def train(
    base: StanceFeatures,
    labelled: Sequence[LabelledReply],
    *,
    current: adapt.AdaptedClassifier | None = None,
    current_trained_at: datetime | None = None,
) -> TrainingOutcome:
    """Train a head on ``labelled`` over ``base`` and decide whether it replaces what serves the prompt now (the
    base alone, or ``current``, trained at ``current_trained_at``). Labels outside the prompt's are left out.
    Runs for about a second on a few hundred labels: call it in a worker thread."""
    started = time.perf_counter()
    usable = [item for item in labelled if item.label in base.labels and item.text]
    fresh = None
    head = None
    if current is not None and current.base.version == base.version:
        head = current.head
        fresh = [current_trained_at is None or item.labelled_at > current_trained_at for item in usable]
    new, figures = adapt.compare(
        base, [item.text for item in usable], [item.label for item in usable], current=head, fresh=fresh
    )
    figures["sources"] = {src: sum(item.source == src for item in usable) for src in (DECLARED, RELABEL, REVIEW)}
    return TrainingOutcome(new, figures, bool(figures["better"]), round(time.perf_counter() - started, 3))
