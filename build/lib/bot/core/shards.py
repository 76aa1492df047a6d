"""Which guilds one process serves when the bot runs as several shard processes (no discord.py here).

Discord routes guild ``g`` to shard ``(g >> 22) % shard_count``; a process that runs ``ids`` of ``count`` shards
sees only those guilds' events, so it must also be the one that does their scheduled work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def shard_of(guild_id: int, count: int) -> int:
    """The shard Discord sends a guild's events to."""
    return (guild_id >> 22) % count


@dataclass(frozen=True)
class ShardSet:
    """The shards this process runs, out of ``count``."""

    count: int
    ids: frozenset[int]

    @classmethod
    def of(cls, count: int, ids: Iterable[int]) -> ShardSet | None:
        """The set for a configuration; ``None`` when this process serves every guild (no sharding, or all shards)."""
        chosen = frozenset(ids)
        if count <= 1 or not chosen or len(chosen) == count:
            return None
        if any(not 0 <= shard < count for shard in chosen):
            raise ValueError(f"shard ids must be between 0 and {count - 1}, not {sorted(chosen)}")
        return cls(count, chosen)

    def owns(self, guild_id: int) -> bool:
        """Whether this process serves the guild."""
        return shard_of(guild_id, self.count) in self.ids
