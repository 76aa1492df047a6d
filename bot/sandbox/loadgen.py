"""Load generation against the loopback server: a guild full of members replying to prompt threads.

Shared by ``tests/load`` and ``benchmarks/load.py``: build the world, have the moderator post prompts (through the
bot's own ``/prompt post``), send replies in a burst or at a steady rate, and count what the database holds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import discord
from sqlalchemy import func, select

from bot.assets import data_dir
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import make_engine
from bot.storage.models import Reply, Stance

#: Real replies (the labelled data), by prompt id.
DATA = data_dir()


def sample_texts(prompt: str) -> list[str]:
    """The labelled replies of a prompt (what members really write: 90-160 characters on average)."""
    path = DATA / f"{prompt}.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def mixed_texts(prompt: str, ja_share: float, *, seed: int = 13) -> list[str]:
    """The prompt's English replies with ``ja_share`` of the pool replaced by its Japanese ones (the team-written
    Japanese data, cycled), in a fixed-seed shuffled order so any stride through the pool sees about that share."""
    english = sample_texts(prompt)
    path = DATA / "ja" / f"{prompt}.jsonl"
    japanese = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    n_ja = round(len(english) * ja_share)
    pool = english[: len(english) - n_ja] + [japanese[i % len(japanese)] for i in range(n_ja)]
    random.Random(seed).shuffle(pool)
    return pool


@dataclass
class LoadWorld:
    """One guild with a #debate channel, a moderator, members, and the prompt threads posted so far."""

    server: LoopbackDiscord
    guild: Any
    channel: Any
    moderator: Any
    members: list[Any]
    threads: dict[int, str] = field(default_factory=dict)  # thread id -> prompt id
    sent: dict[int, float] = field(default_factory=dict)  # message id -> unix time the server sent it

    def message_ids(self) -> list[int]:
        """Every reply sent so far."""
        return list(self.sent)


def build_world(server: LoopbackDiscord, *, members: int = 200) -> LoadWorld:
    """A guild with ``members`` members (before the bot connects, so its GUILD_CREATE carries them)."""
    guild = server.create_guild("Load guild")
    channel = server.create_channel(guild, "debate")
    moderator = server.create_member(guild, "mod", permissions=discord.Permissions(manage_messages=True))
    people = [server.create_member(guild, f"member{i:05d}") for i in range(members)]
    return LoadWorld(server, guild, channel, moderator, people)


async def post_prompt(world: LoadWorld, prompt: str, timeout: float = 30.0) -> int:  # noqa: ASYNC109
    """The moderator runs ``/prompt post``; returns the new thread's id."""
    before = set(world.server.threads)
    await world.server.slash(
        world.guild, world.channel.id, world.moderator, "prompt", subcommand="post", options={"prompt": prompt},
        timeout=timeout,
    )  # fmt: skip
    [thread_id] = set(world.server.threads) - before
    world.threads[thread_id] = prompt
    return thread_id


async def send_replies(
    world: LoadWorld,
    count: int,
    *,
    rate: float | None = None,
    texts: dict[str, list[str]] | None = None,
    stop: Callable[[], bool] | None = None,
    start: int = 0,
) -> list[int]:
    """Send ``count`` replies round-robin over the threads and members; at ``rate`` per second if given (else as
    fast as the server goes). Returns the message ids; their send times are kept in ``world.sent``."""
    texts = texts or {prompt: sample_texts(prompt) for prompt in set(world.threads.values())}
    threads = list(world.threads.items())
    authors = itertools.cycle(world.members[start % len(world.members) :] + world.members[: start % len(world.members)])
    ids: list[int] = []
    began = time.monotonic()
    for i in range(count):
        if stop is not None and stop():
            break
        if rate is not None:
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        thread_id, prompt = threads[(start + i) % len(threads)]
        pool = texts[prompt]
        message_id = world.server.world.snowflakes.next()
        world.sent[message_id] = time.time()
        await world.server.send_message(thread_id, next(authors), pool[(start + i) % len(pool)], message_id=message_id)
        ids.append(message_id)
        if rate is None and i % 200 == 199:
            await asyncio.sleep(0)  # let the server's other tasks (websocket writes) run
    return ids


@dataclass(frozen=True)
class Counts:
    """What the database holds for a set of message ids."""

    replies: int  # stored reply rows among the ids
    classified: int  # of those, replies with status classified
    pending: int
    model_stances: dict[int, int]  # message id -> number of model stances (exactly once: all 1)

    def exactly_once(self, ids: Sequence[int]) -> bool:
        """Every id stored once and classified with exactly one model stance."""
        return self.replies == len(set(ids)) and all(self.model_stances.get(i) == 1 for i in ids)

    def twice(self) -> list[int]:
        """Message ids with more than one model stance."""
        return [mid for mid, n in self.model_stances.items() if n > 1]


async def count_replies(db_url: str, ids: Sequence[int]) -> Counts:
    """Count replies and model stances for these message ids (a separate connection, as an auditor would)."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            statuses = dict(
                (
                    await conn.execute(
                        select(Reply.status, func.count()).where(Reply.message_id.in_(list(ids))).group_by(Reply.status)
                    )
                ).all()
            )
            stances = dict(
                (
                    await conn.execute(
                        select(Reply.message_id, func.count(Stance.id))
                        .join(Stance, Stance.reply_id == Reply.id)
                        .where(Reply.message_id.in_(list(ids)), Stance.source == "model")
                        .group_by(Reply.message_id)
                    )
                ).all()
            )
            total = int(
                await conn.scalar(select(func.count()).select_from(Reply).where(Reply.message_id.in_(list(ids)))) or 0
            )
    finally:
        await engine.dispose()
    return Counts(
        replies=total,
        classified=int(statuses.get("classified", 0)),
        pending=int(statuses.get("pending", 0)),
        model_stances={int(k): int(v) for k, v in stances.items()},
    )


async def wait_for_counts(
    db_url: str,
    ids: Sequence[int],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - a plain deadline
    every: float = 0.5,
) -> Counts:
    """Poll until every id is stored and classified (or ``timeout``); returns the last counts."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await count_replies(db_url, ids)
        if counts.classified >= len(set(ids)) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(every)
