"""One harness for driving the real bot on the loopback Discord server: the sandbox and the end-to-end tests both
use it (a guild with a #debate channel and a moderator, members created on first use, the bot started and
stopped, replies sent and their stances awaited)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import discord

from bot.config import Settings
from bot.core.text import storage_forms
from bot.pipeline import ReplyOutcome
from bot.runtime import Runtime, build_runtime
from bot.sandbox.server import LoopbackDiscord
from bot.storage.records import PostInfo

if TYPE_CHECKING:
    from bot.app import Stancebot
    from bot.core.encoder import SentenceEncoder


def text_of(result: Any) -> str:
    """Everything the bot said in answer to an interaction (its answer, follow-ups, or the message it edited)."""
    parts = [result.content or ""] + [f.get("content") or "" for f in getattr(result, "followups", [])]
    if getattr(result, "message", None) is None and isinstance(getattr(result, "data", None), dict):
        parts.append(result.data.get("content") or "")
    return " ".join(p for p in parts if p)


def new_guild(server: LoopbackDiscord, name: str = "Test guild", *, moderator: str = "mod") -> tuple[Any, Any, Any]:
    """A guild with a #debate channel and a moderator (Manage Messages)."""
    guild = server.create_guild(name)
    channel = server.create_channel(guild, "debate")
    mod = server.create_member(guild, moderator, permissions=discord.Permissions(manage_messages=True))
    return guild, channel, mod


@asynccontextmanager
async def running_bot(
    settings: Settings,
    server: LoopbackDiscord,
    *,
    encoder: SentenceEncoder | None = None,
    clock: Callable[[], datetime] | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109 - a plain deadline for start-up
) -> AsyncIterator[Runtime]:
    """Start the real bot against ``server`` (with a fake ``clock`` if given), wait until it is ready, and close it
    afterwards; a bot that fails to start raises why."""
    runtime = await build_runtime(settings, encoder=encoder)
    runtime.services.clock = clock
    task = asyncio.create_task(runtime.bot.start(server.token), name="harness-bot")
    try:
        waiter = asyncio.create_task(runtime.bot.wait_until_ready())
        done, _ = await asyncio.wait({waiter, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            waiter.cancel()
            task.result()  # the bot failed to start: surface why
        if waiter not in done:
            waiter.cancel()
            raise RuntimeError(f"The bot did not become ready on the loopback server within {timeout:.0f} s.")
        yield runtime
    finally:
        await runtime.shutdown(settings.general.shutdown_timeout_s)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class World:
    """A running loopback Discord with one guild and the real bot connected to it."""

    server: LoopbackDiscord
    runtime: Runtime
    guild: Any
    channel: Any
    moderator: Any
    members: dict[str, Any] = field(default_factory=dict)

    @property
    def bot(self) -> Stancebot:
        """The running bot."""
        return self.runtime.bot

    def member(self, name: str) -> Any:
        """A guild member called ``name`` (created on first use)."""
        if name not in self.members:
            self.members[name] = self.server.create_member(self.guild, name)
        return self.members[name]

    def slash(self, who: Any, command: str, sub: str, /, **options: Any) -> Any:
        """Run ``/command sub`` in the world's channel as ``who``."""
        return self.server.slash(self.guild, self.channel.id, who, command, subcommand=sub, options=options or None)

    async def post_prompt(self, prompt: str = "alliance") -> tuple[Any, PostInfo | None]:
        """The moderator runs ``/prompt post``; returns the answer and the post it opened (``None`` if none)."""
        before = set(self.server.threads)
        result = await self.slash(self.moderator, "prompt", "post", prompt=prompt)
        opened = [t for t in self.server.threads if t not in before]
        post = await self.bot.post_for_thread(opened[-1]) if opened else None
        return result, post

    async def reply(
        self,
        thread_id: int,
        author: str,
        text: str,
        *,
        timeout: float = 20,  # noqa: ASYNC109
        **kwargs: Any,
    ) -> ReplyOutcome:
        """Send a message as a member and wait until the bot stored its stance (its text in whichever of
        :func:`~bot.core.text.storage_forms` the database holds)."""
        member = self.member(author)
        forms = storage_forms(text)
        waiter = asyncio.ensure_future(
            self.bot.wait_for(
                "stance_recorded",
                check=lambda o: o.reply.author_id == member.id and o.reply.content in forms,
                timeout=timeout,
            )
        )
        await self.server.send_message(thread_id, member, text, **kwargs)
        outcome: ReplyOutcome = await waiter
        return outcome


@asynccontextmanager
async def world_on(
    server: LoopbackDiscord,
    settings: Settings,
    *,
    encoder: SentenceEncoder | None = None,
    clock: Callable[[], datetime] | None = None,
    guild: tuple[Any, Any, Any] | None = None,
    members: dict[str, Any] | None = None,
) -> AsyncIterator[World]:
    """The bot on ``server`` with a guild (a new one unless ``guild`` = (guild, channel, moderator) is given)."""
    guild_, channel, moderator = guild or new_guild(server)
    async with running_bot(settings, server, encoder=encoder, clock=clock) as runtime:
        yield World(server, runtime, guild_, channel, moderator, {} if members is None else members)
