"""``/digest``: stance digests on a schedule or on demand, and the scheduler that posts them and scheduled prompts.

The schedules are database rows (:mod:`bot.storage.schedules`); :class:`bot.scheduler.Scheduler` fires them. This
cog only parses commands, renders digests for Discord and posts them. Every message goes out with
``AllowedMentions.none()``, and quoted replies have their mentions neutralised.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import command_allowed, moderator_only, require_bot_permissions
from bot.cogs._digest_render import chart_file, digest_embed
from bot.cogs._prompts import prompt_autocomplete, publish_prompt
from bot.cogs._schedule import guild_zone, when
from bot.core.chart import render_chart
from bot.core.digest import Digest
from bot.core.errors import StancebotError
from bot.core.periods import WEEKDAYS, Cadence, PeriodKind, parse_kind, parse_local_time
from bot.core.shards import ShardSet
from bot.scheduler import Scheduler
from bot.storage.schedules import DigestClaim, PromptScheduleInfo, ScheduleInfo

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()
WEEKDAY_CHOICES = [app_commands.Choice(name=name, value=i) for i, name in enumerate(WEEKDAYS)]
PERIOD_CHOICES = [
    app_commands.Choice(name="weekly (default)", value="weekly"),
    app_commands.Choice(name="daily", value="daily"),
    app_commands.Choice(name="monthly (first chosen weekday of the month)", value="monthly"),
]


class DiscordPublisher:
    """Posts what the scheduler says is due."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot

    async def _channel(self, channel_id: int) -> discord.TextChannel | discord.Thread:
        try:
            channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
        except (discord.NotFound, discord.Forbidden):
            raise StancebotError(f"Channel {channel_id} no longer exists or the bot cannot see it.") from None
        if not isinstance(channel, discord.TextChannel | discord.Thread):
            raise StancebotError(f"Channel {channel_id} is not a text channel or thread.")
        return channel

    async def publish_digest(self, claim: DigestClaim, digest: Digest) -> int:
        """Post the digest embed with its chart; returns the message id."""
        channel = await self._channel(claim.channel_id)
        require_bot_permissions(channel, send_messages=True, embed_links=True, attach_files=True)
        return (await send_digest(channel, digest, footer=digest_footer(digest, claim.id))).id

    async def find_digest(self, claim: DigestClaim) -> int | None:
        """The digest message of this claim, if an earlier attempt did post it (its footer carries the claim id)."""
        channel = await self._channel(claim.channel_id)
        assert self.bot.user is not None
        marker = f"digest #{claim.id} "
        after = discord.Object(discord.utils.time_snowflake(claim.period.end - timedelta(minutes=1)))
        try:
            async for message in channel.history(limit=100, after=after):
                if message.author.id == self.bot.user.id and any(
                    marker in (embed.footer.text or "") + " " for embed in message.embeds
                ):
                    return message.id
        except discord.Forbidden:
            log.warning("Cannot read the history of channel %s to check for digest %s", channel.id, claim.id)
        return None

    async def publish_prompt(self, schedule: PromptScheduleInfo) -> tuple[int, int]:
        """Post a scheduled prompt; returns (message id, thread id)."""
        channel = await self._channel(schedule.channel_id)
        if not isinstance(channel, discord.TextChannel):
            raise StancebotError("Prompts can be posted in text channels only.")
        prompt = self.bot.resolve_prompt(schedule.prompt_slug, schedule.guild_id)
        post = await publish_prompt(self.bot, channel, prompt, posted_by=schedule.created_by)
        return post.message_id, post.thread_id


def digest_footer(digest: Digest, claim_id: int | None) -> str:
    """``Stancebot digest #12 · model …`` (the number lets a retry find a digest that did go out)."""
    head = f"Stancebot digest #{claim_id}" if claim_id is not None else f"Preview: {digest.period.this} so far"
    return f"{head} · {digest.model_note}" if digest.model_note else head


async def send_digest(channel: discord.abc.Messageable, digest: Digest, *, footer: str) -> discord.Message:
    """Render the chart off the event loop and send embed + PNG with no mentions allowed."""
    png = await asyncio.to_thread(render_chart, digest)
    return await channel.send(embed=digest_embed(digest, footer=footer), file=chart_file(png), allowed_mentions=NONE)


def _model_note(bot: Stancebot, prompt_id: str, guild_id: int) -> str:
    """``model <version>`` when the prompt's classifier is loaded (never loads one on the event loop)."""
    version = bot.services.stance.version(prompt_id, guild_id)
    return "" if version == "unknown" else f"model {version}"


@app_commands.guild_only()
@app_commands.default_permissions(manage_messages=True)
class Digests(commands.GroupCog, group_name="digest", group_description="Stance digests (moderators)"):
    """Scheduled and on-demand stance digests, and the scheduler that posts them."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        self.clock = bot.now
        self.repo = bot.services.repo
        self.scheduler = Scheduler(
            self.repo.schedules,
            self.repo.digests,
            bot.services.catalog,
            DiscordPublisher(bot),
            clock=self.clock,
            model_note=lambda prompt_id, guild_id: _model_note(bot, prompt_id, guild_id),
            ready=bot.wait_until_ready,
            shards=ShardSet.of(bot.services.settings.bot.shard_count, bot.services.settings.bot.shard_ids),
        )
        super().__init__()

    async def cog_load(self) -> None:
        """Start the scheduler."""
        self.scheduler.start()

    async def cog_unload(self) -> None:
        """Stop the scheduler."""
        await self.scheduler.stop()

    @commands.Cog.listener()
    async def on_schedules_changed(self) -> None:
        """A schedule was added or moved (here or in another cog): look at the database again now."""
        self.scheduler.wake()

    async def _cadence(self, guild_id: int, prompt_id: str, kind: PeriodKind) -> Cadence:
        """The guild's schedule's cadence for this prompt and kind; else calendar periods in the guild's zone."""
        for schedule in await self.repo.schedules.schedules(guild_id):
            if schedule.prompt_slug == prompt_id and schedule.cadence.kind == kind:
                return schedule.cadence
        return Cadence(kind, tz=await guild_zone(self.bot, guild_id))

    @app_commands.command(name="schedule", description="Post a prompt's stance digest in a channel every week")
    @app_commands.describe(
        prompt="Which prompt",
        channel="Where the digest goes",
        weekday="Day it is posted (each digest covers the period that just ended)",
        time="Local time, 24-hour HH:MM, in the server's time zone (/config timezone)",
        period="weekly (default), daily or monthly",
    )
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @app_commands.choices(weekday=WEEKDAY_CHOICES)
    @app_commands.choices(period=PERIOD_CHOICES)
    @moderator_only()
    async def schedule(
        self,
        interaction: discord.Interaction,
        prompt: str,
        channel: discord.TextChannel,
        weekday: app_commands.Choice[int],
        time: str,
        period: app_commands.Choice[str] | None = None,
    ) -> None:
        """Create or move the digest schedule of a prompt."""
        assert interaction.guild is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild.id)
        at = parse_local_time(time)
        kind = parse_kind(period.value if period else "weekly")
        require_bot_permissions(channel, send_messages=True, embed_links=True, attach_files=True)
        await self.bot.services.repo.guilds.ensure_guild(interaction.guild.id, interaction.guild.name)
        tz = await guild_zone(self.bot, interaction.guild.id)
        cadence = Cadence(kind, weekday.value, at, tz)
        info = await self.repo.schedules.upsert_schedule(
            interaction.guild.id, definition.id, channel.id, cadence, created_by=interaction.user.id, now=self.clock()
        )
        self.scheduler.wake()
        log.info("Digest schedule %s set in guild %s", info.id, interaction.guild.id)
        await interaction.response.send_message(
            f"The {kind} digest of **{definition.id}** will be posted in {channel.mention} {cadence.describe()}. "
            f"Next: {when(info.next_due_at)}.",
            ephemeral=True,
            allowed_mentions=NONE,
        )

    @app_commands.command(name="now", description="Post a prompt's digest for the current period so far")
    @app_commands.describe(prompt="Which prompt", period="weekly (default), daily or monthly")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @app_commands.choices(period=PERIOD_CHOICES)
    @moderator_only()
    async def now(
        self, interaction: discord.Interaction, prompt: str, period: app_commands.Choice[str] | None = None
    ) -> None:
        """This period so far, compared with the previous one, posted in this channel."""
        assert interaction.guild_id is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild_id)
        if interaction.channel is not None and not isinstance(interaction.channel, discord.DMChannel):
            require_bot_permissions(interaction.channel, embed_links=True, attach_files=True)  # type: ignore[arg-type]
        await interaction.response.defer(thinking=True)
        cadence = await self._cadence(
            interaction.guild_id, definition.id, parse_kind(period.value if period else "weekly")
        )
        now = self.clock()
        digest = await self.repo.digests.build_digest(
            definition,
            interaction.guild_id,
            cadence.period_containing(now),
            cadence,
            now=now,
            model_note=_model_note(self.bot, definition.id, interaction.guild_id),
        )
        png = await asyncio.to_thread(render_chart, digest)
        await interaction.followup.send(
            embed=digest_embed(digest, footer=digest_footer(digest, None)),
            file=chart_file(png),
            allowed_mentions=NONE,
        )

    @app_commands.command(name="list", description="Scheduled digests and prompt posts in this server")
    @moderator_only()
    async def list_(self, interaction: discord.Interaction) -> None:
        """Every active digest schedule and pending prompt post of the guild."""
        assert interaction.guild_id is not None
        digests = await self.repo.schedules.schedules(interaction.guild_id)
        prompts = await self.repo.schedules.prompt_schedules(interaction.guild_id)
        lines = [
            f"`digest:{s.id}` **{s.prompt_slug}** {s.cadence.kind} in <#{s.channel_id}>, "
            f"{s.cadence.describe()}; next {when(s.next_due_at)}"
            for s in digests
        ]
        lines += [
            f"`prompt:{p.id}` post **{p.prompt_slug}** in <#{p.channel_id}> at {when(p.post_at)}" for p in prompts
        ]
        text = "\n".join(lines) or "Nothing is scheduled. Use `/digest schedule` or `/prompt schedule`."
        await interaction.response.send_message(text[:2000], ephemeral=True, allowed_mentions=NONE)

    @app_commands.command(name="cancel", description="Stop a scheduled digest or a scheduled prompt post")
    @app_commands.describe(what="A schedule from the list, or a prompt id to stop all of its digests")
    @moderator_only()
    async def cancel(self, interaction: discord.Interaction, what: str) -> None:
        """Cancel ``digest:<id>``, ``prompt:<id>`` or every digest schedule of a prompt id."""
        assert interaction.guild_id is not None
        kind, _, raw_id = what.partition(":")
        stopped: list[str] = []
        if kind == "prompt" and raw_id.isdigit():
            cancelled = await self.repo.schedules.cancel_prompt_schedule(interaction.guild_id, int(raw_id))
            if cancelled is not None:
                stopped.append(f"the post of **{cancelled.prompt_slug}** at {when(cancelled.post_at)}")
        elif kind == "digest" and raw_id.isdigit():
            found = await self.repo.schedules.cancel_schedules(interaction.guild_id, schedule_id=int(raw_id))
            stopped += [_schedule_text(s) for s in found]
        else:
            found = await self.repo.schedules.cancel_schedules(interaction.guild_id, prompt_slug=what.strip())
            stopped += [_schedule_text(s) for s in found]
        text = (
            "Stopped " + "; ".join(stopped) + "."
            if stopped
            else f"Nothing scheduled matches {what!r}; see `/digest list`."
        )
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NONE)

    @cancel.autocomplete("what")
    async def _cancel_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None or not await command_allowed(interaction):
            return []
        choices = [
            app_commands.Choice(name=_schedule_text(s)[:100], value=f"digest:{s.id}")
            for s in await self.repo.schedules.schedules(interaction.guild_id)
        ]
        choices += [
            app_commands.Choice(
                name=f"post {p.prompt_slug} at {p.post_at:%Y-%m-%d %H:%M} UTC"[:100], value=f"prompt:{p.id}"
            )
            for p in await self.repo.schedules.prompt_schedules(interaction.guild_id)
        ]
        current = current.lower()
        return [c for c in choices if current in c.name.lower() or current in c.value][:25]


def _schedule_text(schedule: ScheduleInfo) -> str:
    return f"the {schedule.cadence.kind} digest of {schedule.prompt_slug} ({schedule.cadence.describe()})"


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(Digests(bot))
