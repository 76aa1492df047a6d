"""Guild settings: the guild row, its time zone (digests and schedules follow it) and its moderation channels."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select

from bot.storage.base import Store
from bot.storage.models import AuditEntry, DigestSchedule, Guild, PromptRow, utcnow
from bot.storage.models import GuildSettings as GuildSettingsRow
from bot.storage.records import GuildConfig
from bot.storage.rules import ensure_guild
from bot.storage.schedules import ScheduleInfo, schedule_info


class GuildSettings(Store):
    """Per-guild settings; every method is one transaction."""

    async def ensure_guild(self, guild_id: int, name: str = "") -> None:
        """Create the guild row if missing; keep its name current."""
        async with self.transaction() as s:
            await ensure_guild(s, guild_id, name)

    async def guild_timezone(self, guild_id: int) -> str | None:
        """The zone a moderator set for the guild; ``None`` when unset (the column's default ``UTC`` = unset)."""
        async with self.transaction() as s:
            tz = await s.scalar(select(Guild.timezone).where(Guild.id == guild_id))
            return tz if tz and tz != "UTC" else None

    async def set_guild_timezone(self, guild_id: int, tz: str, *, now: datetime) -> list[ScheduleInfo]:
        """Set the guild's zone and move its active schedules to it (their next fire time is recomputed)."""
        async with self.transaction() as s:
            await ensure_guild(s, guild_id)
            guild = await s.get(Guild, guild_id)
            assert guild is not None
            guild.timezone = tz
            rows = await s.execute(
                select(DigestSchedule, PromptRow.slug)
                .join(PromptRow, PromptRow.id == DigestSchedule.prompt_id)
                .where(DigestSchedule.guild_id == guild_id, DigestSchedule.active)
            )
            moved = []
            for row, slug in rows:
                row.timezone = tz
                row.next_due_at = schedule_info(row, slug).cadence.next_boundary(now)
                moved.append(schedule_info(row, slug))
            return moved

    async def guild_config(self, guild_id: int) -> GuildConfig:
        """The guild's moderation settings (defaults when none were set)."""
        async with self.transaction() as s:
            row = await s.get(GuildSettingsRow, guild_id)
            return GuildConfig() if row is None else GuildConfig(row.mod_log_channel_id, row.review_channel_id)

    async def set_guild_channel(
        self, guild_id: int, *, kind: Literal["mod_log", "review"], channel_id: int | None, actor_id: int
    ) -> GuildConfig:
        """Set or clear (``None``) the guild's mod-log or review channel."""
        async with self.transaction() as s:
            await ensure_guild(s, guild_id)
            row = await s.get(GuildSettingsRow, guild_id)
            if row is None:
                row = GuildSettingsRow(guild_id=guild_id)
                s.add(row)
            if kind == "mod_log":
                row.mod_log_channel_id = channel_id
            else:
                row.review_channel_id = channel_id
            row.updated_at = utcnow()
            detail = f"{kind} channel {'cleared' if channel_id is None else channel_id}"
            s.add(AuditEntry(guild_id=guild_id, action="settings", actor_id=actor_id, detail=detail))
            await s.flush()
            return GuildConfig(row.mod_log_channel_id, row.review_channel_id)
