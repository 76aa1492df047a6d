"""What storage hands out: plain frozen dataclasses (never ORM objects) and the errors its writes raise."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bot.core.counting import CountMode as CountMode
from bot.core.errors import StancebotError
from bot.core.stance import StanceResult
from bot.core.text import reply_text, well_formed

PromptState = Literal["unposted", "open", "closed"]

#: ``stances.source`` of a stance a moderator set (``/stance relabel`` or the review queue).
MODERATOR = "moderator"

#: One member's counting on one prompt: (prompt row id, guild id, author id).
Member = tuple[int, int, int]


class NotAReplyError(StancebotError):
    """The message is not a reply Stancebot stored (in this guild)."""


class PromptClosedError(StancebotError):
    """The prompt is closed in this guild: it no longer counts."""


class OptedOutError(StancebotError):
    """The member opted out of being counted."""


class ReviewDoneError(StancebotError):
    """The review item was already handled."""


@dataclass(frozen=True)
class PostInfo:
    """A posted prompt thread."""

    id: int
    prompt_row_id: int
    prompt_slug: str
    guild_id: int
    channel_id: int
    message_id: int
    thread_id: int
    closed: bool


@dataclass(frozen=True)
class ReplyRef:
    """A stored reply, enough to classify it."""

    id: int
    message_id: int
    prompt_slug: str
    guild_id: int
    author_id: int
    content: str


@dataclass(frozen=True)
class NewReply:
    """A message to store as a reply to a prompt post; its text is made well formed (no lone surrogates), so
    that the spool and every database can hold it."""

    post: PostInfo
    message_id: int
    author_id: int
    content: str
    created_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "content", well_formed(reply_text(self.content)))


@dataclass(frozen=True)
class StanceWrite:
    """A model's stance for a stored reply; ``reply.content`` is the text that was classified."""

    reply: ReplyRef
    result: StanceResult
    model_version: str


@dataclass(frozen=True)
class StoredStance:
    """A reply's current stance as stored."""

    message_id: int
    label: str
    confidence: float
    model_version: str
    reason: str | None
    source: str
    counted: bool


@dataclass(frozen=True)
class PromptOverview:
    """A prompt as ``/prompt list`` shows it for one guild."""

    slug: str
    title: str
    guild_owned: bool
    state: PromptState
    posts: int
    counted: int


@dataclass(frozen=True)
class DeclareResult:
    """A member's declared stance before and after pressing a button (``None``: no declaration)."""

    prompt_slug: str
    previous: str | None
    current: str | None
    counted: bool
    guild_id: int = 0


@dataclass(frozen=True)
class ReviewInfo:
    """A reply waiting for (or given) a moderator's label."""

    id: int
    reply_id: int
    guild_id: int
    prompt_slug: str
    labels: tuple[str, ...]
    message_id: int
    thread_id: int
    author_id: int
    text: str | None
    model_label: str
    confidence: float
    status: str
    review_channel_id: int | None
    review_message_id: int | None
    resolved_by: int | None


@dataclass(frozen=True)
class GuildConfig:
    """Per-guild moderation settings."""

    mod_log_channel_id: int | None = None
    review_channel_id: int | None = None
