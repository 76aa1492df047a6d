"""What happens to a reply: store it, classify it off the event loop, store its stance. No discord.py here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from bot.core.service import StanceService
from bot.core.stance import StanceResult
from bot.storage.repository import PostInfo, ReplyRef, Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplyOutcome:
    """A classified reply, for listeners (reactions, the sandbox printout, metrics)."""

    reply: ReplyRef
    result: StanceResult
    model_version: str
    edited: bool = False


class ReplyPipeline:
    """Stores replies before classifying them, so a crash between the two loses nothing (see :meth:`resume`)."""

    def __init__(self, repo: Repository, service: StanceService) -> None:
        self.repo = repo
        self.service = service

    async def on_reply(
        self, post: PostInfo, *, message_id: int, author_id: int, content: str, created_at: datetime
    ) -> ReplyOutcome | None:
        """Handle a new message in a prompt thread; ``None`` when it was already stored (duplicate event)."""
        if post.closed:
            return None
        reply = await self.repo.add_reply(
            post, message_id=message_id, author_id=author_id, content=content, created_at=created_at
        )
        if reply is None:
            log.debug("Message %s already stored; duplicate event ignored", message_id)
            return None
        return await self._classify(reply)

    async def on_edit(self, message_id: int, content: str, edited_at: datetime) -> ReplyOutcome | None:
        """Reclassify an edited reply."""
        reply = await self.repo.edit_reply(message_id, content, edited_at)
        return None if reply is None else await self._classify(reply, edited=True)

    async def on_delete(self, message_id: int) -> bool:
        """Retract a deleted reply from the tally."""
        return await self.repo.delete_reply(message_id)

    async def resume(self) -> list[ReplyOutcome]:
        """Classify replies that were stored but not classified before the last stop."""
        outcomes = []
        while batch := await self.repo.pending_replies():
            for reply in batch:
                outcomes.append(await self._classify(reply))
        if outcomes:
            log.info("Classified %d replies left pending by the last run", len(outcomes))
        return outcomes

    async def _classify(self, reply: ReplyRef, *, edited: bool = False) -> ReplyOutcome:
        result = await self.service.classify(reply.prompt_slug, reply.content)
        version = self.service.model(reply.prompt_slug).version
        await self.repo.save_stance(reply.id, result, model_version=version)
        return ReplyOutcome(reply, result, version, edited)
