"""Moderation rules without Discord: message links, which stances need a moderator's review, audit records."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from bot.core.errors import StancebotError
from bot.core.prompts import UNCLEAR
from bot.core.stance import StanceResult

#: The reason :class:`bot.core.stance.GatedClassifier` gives a stance it turned ``unclear`` for low confidence.
LOW_CONFIDENCE = "low confidence"

_LINK = re.compile(
    r"^https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?P<guild>\d+|@me)/(?P<channel>\d+)/(?P<message>\d+)/?$"
)
_ID = re.compile(r"^\d{15,21}$")


class MessageLinkError(StancebotError):
    """Text that is neither a Discord message link nor a message id."""


@dataclass(frozen=True)
class MessageRef:
    """Where a message is: guild and channel are ``None`` when only its id was given."""

    message_id: int
    channel_id: int | None = None
    guild_id: int | None = None


def parse_message_link(text: str) -> MessageRef:
    """Read ``https://discord.com/channels/<guild>/<channel>/<message>`` or a bare message id."""
    text = text.strip().strip("<>")
    if _ID.match(text):
        return MessageRef(int(text))
    match = _LINK.match(text)
    if match is None:
        raise MessageLinkError(
            "That is not a message link. Right-click the reply (or long-press it) and choose *Copy Message Link*."
        )
    guild = match["guild"]
    return MessageRef(int(match["message"]), int(match["channel"]), None if guild == "@me" else int(guild))


def message_link(guild_id: int, channel_id: int, message_id: int) -> str:
    """The jump URL of a message."""
    return f"https://discord.com/channels/{guild_id}/{channel_id}/{message_id}"


def needs_review(result: StanceResult, *, below: float) -> bool:
    """Whether a model stance goes to the moderators' review queue.

    Yes when the gate turned it ``unclear`` for low confidence, or when the model's own confidence is below
    ``below``. Replies that are empty, emoji only or in another language (a reason, full confidence) never do.
    """
    if result.reason is not None:
        return result.reason.startswith(LOW_CONFIDENCE)
    return result.confidence < below


def runner_up(result: StanceResult) -> str:
    """The label the model leaned to: the one named in a low-confidence reason, else the result's label."""
    if result.reason and result.reason.startswith(LOW_CONFIDENCE):
        inner = result.reason[len(LOW_CONFIDENCE) :].strip(" ()")
        return inner.split(" ", 1)[0] or UNCLEAR
    return result.label


@dataclass(frozen=True)
class AuditRecord:
    """One audit-log entry as the cogs show it."""

    id: int
    guild_id: int | None
    action: str
    prompt_slug: str | None
    message_id: int | None
    channel_id: int | None
    subject_id: int | None
    actor_id: int | None
    from_label: str | None
    to_label: str | None
    detail: str | None
    created_at: datetime

    def describe(self) -> str:
        """One line, e.g. ``relabel alliance: unfair -> fair``."""
        parts = [self.action]
        if self.prompt_slug:
            parts.append(self.prompt_slug)
        line = " ".join(parts)
        if self.from_label or self.to_label:
            line += f": {self.from_label or 'none'} -> {self.to_label or 'none'}"
        if self.detail:
            line += f" ({self.detail})"
        return line
