"""The one place that reads and writes the database: :class:`Repository`, one object over one sessionmaker whose
methods are each one transaction and return plain dataclasses, never ORM objects.

Its parts live by concern: :mod:`bot.storage.core` (guilds, prompts, posts, replies, stances, declared stances and
the counting rules), :mod:`bot.storage.moderation` (relabels, audit log, review queue, guild settings) and
:mod:`bot.storage.privacy` (exports, opt-outs, forget-me, retention). Digests and batched ingest have their own
stores over the same repository (:mod:`bot.storage.digests`, :mod:`bot.storage.ingest`).
"""

from __future__ import annotations

from bot.storage.core import (
    MODERATOR,
    CountMode,
    DeclareResult,
    NotAReplyError,
    OptedOutError,
    PostInfo,
    PromptClosedError,
    PromptOverview,
    PromptState,
    ReplyRef,
    RepositoryCore,
    StoredStance,
)
from bot.storage.moderation import GuildConfig, ModerationQueries, ReviewDoneError, ReviewInfo
from bot.storage.privacy import ForgetReport, PrivacyQueries, PurgeReport

__all__ = [
    "MODERATOR",
    "CountMode",
    "DeclareResult",
    "ForgetReport",
    "GuildConfig",
    "NotAReplyError",
    "OptedOutError",
    "PostInfo",
    "PromptClosedError",
    "PromptOverview",
    "PromptState",
    "PurgeReport",
    "ReplyRef",
    "Repository",
    "RepositoryCore",
    "ReviewDoneError",
    "ReviewInfo",
    "StoredStance",
]


class Repository(ModerationQueries, PrivacyQueries):
    """Async storage API over one sessionmaker. Every method is one transaction."""
