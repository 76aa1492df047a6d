"""``/review`` (the queue of replies the model was unsure about) and ``/audit`` (the mod-log), for moderators.

Listens for ``stance_recorded`` (post a reply needing review in the review channel) and ``stance_audit`` (post a
change in the mod-log channel). The review buttons live in :mod:`bot.cogs._views`; this cog registers them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import moderator_only, require_bot_permissions
from bot.cogs._prompts import prompt_autocomplete
from bot.cogs._render import audit_embed, audit_list_embed, review_embed
from bot.cogs._views import ReviewButton, ReviewSkipButton, review_view
from bot.core.moderation import AuditRecord, needs_review
from bot.pipeline import ReplyOutcome
from bot.storage.records import GuildConfig

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()
ChannelKind = Literal["mod_log", "review"]


class Moderation(commands.Cog):
    """The review queue and the mod-log."""

    review = app_commands.Group(
        name="review", description="Replies the model was unsure about (moderators)", guild_only=True
    )
    audit = app_commands.Group(name="audit", description="The log of stance changes (moderators)", guild_only=True)

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        self._configs: dict[int, GuildConfig] = {}

    async def cog_load(self) -> None:
        """Handle presses of the review buttons (also on messages sent before a restart)."""
        self.bot.add_dynamic_items(ReviewButton, ReviewSkipButton)

    async def cog_unload(self) -> None:
        """Stop handling the review buttons."""
        self.bot.remove_dynamic_items(ReviewButton, ReviewSkipButton)

    async def _config(self, guild_id: int) -> GuildConfig:
        if guild_id not in self._configs:
            self._configs[guild_id] = await self.bot.services.repo.guilds.guild_config(guild_id)
        return self._configs[guild_id]

    async def _channel(self, channel_id: int) -> discord.abc.Messageable | None:
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            try:
                channel = await self.bot.fetch_channel(channel_id)
            except discord.HTTPException:
                return None
        if isinstance(channel, discord.TextChannel | discord.Thread):
            return channel
        return None

    async def _post(self, channel_id: int, what: str, **kwargs: object) -> discord.Message | None:
        """Send to a configured channel; a missing channel or permission is logged, never raised."""
        channel = await self._channel(channel_id)
        if not isinstance(channel, discord.TextChannel | discord.Thread):
            log.warning("The %s channel %s is gone or not a text channel", what, channel_id)
            return None
        try:
            require_bot_permissions(channel, send_messages=True, embed_links=True)
            return await channel.send(allowed_mentions=NONE, **kwargs)  # type: ignore[call-overload, no-any-return]
        except Exception:
            log.warning("Could not post in the %s channel %s", what, channel_id, exc_info=True)
            return None

    # -- listeners ----------------------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_stance_recorded(self, outcome: ReplyOutcome) -> None:
        """Post a reply the model was unsure about in the guild's review channel (once)."""
        if not needs_review(outcome.result, below=self.bot.services.repo.review_below):  # the repository's rule
            return
        config = await self._config(outcome.reply.guild_id)
        if config.review_channel_id is None:
            return
        repo = self.bot.services.repo
        info = await repo.moderation.open_review_for_reply(outcome.reply.id)
        if info is None or info.review_message_id is not None:
            return
        message = await self._post(config.review_channel_id, "review", embed=review_embed(info), view=review_view(info))
        if message is not None:
            await repo.moderation.set_review_message(info.id, message.channel.id, message.id)

    @commands.Cog.listener()
    async def on_stance_audit(self, record: AuditRecord) -> None:
        """Post a stance change in the guild's mod-log channel, if it has one."""
        if record.guild_id is None:
            return
        config = await self._config(record.guild_id)
        if config.mod_log_channel_id is not None:
            await self._post(config.mod_log_channel_id, "mod-log", embed=audit_embed(record))

    # -- /review ------------------------------------------------------------------------------------------------

    @review.command(name="next", description="Label the oldest reply the model was unsure about")
    @app_commands.describe(prompt="Only this prompt's replies")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def review_next(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        """Show the next review item privately, with a button per label and skip."""
        assert interaction.guild_id is not None
        slug = self.bot.resolve_prompt(prompt, interaction.guild_id).id if prompt else None
        repo = self.bot.services.repo
        info = await repo.moderation.next_review(interaction.guild_id, slug)
        if info is None:
            await interaction.response.send_message("The review queue is empty.", ephemeral=True)
            return
        waiting = await repo.moderation.review_queue_size(interaction.guild_id)
        await interaction.response.send_message(
            f"{waiting} waiting.", embed=review_embed(info), view=review_view(info), ephemeral=True
        )

    @review.command(name="channel", description="Where replies needing review are posted (empty: nowhere)")
    @app_commands.describe(channel="The moderators' channel; leave empty to stop posting them")
    @moderator_only()
    async def review_channel(
        self, interaction: discord.Interaction, channel: discord.TextChannel | None = None
    ) -> None:
        """Set or clear the review channel."""
        await self._set_channel(interaction, "review", channel)

    # -- /audit -------------------------------------------------------------------------------------------------

    @audit.command(name="channel", description="Where stance changes are logged (empty: nowhere)")
    @app_commands.describe(channel="The mod-log channel; leave empty to stop logging there")
    @moderator_only()
    async def audit_channel(self, interaction: discord.Interaction, channel: discord.TextChannel | None = None) -> None:
        """Set or clear the mod-log channel."""
        await self._set_channel(interaction, "mod_log", channel)

    @audit.command(name="recent", description="The latest entries of the audit log")
    @app_commands.describe(count="How many (1-25)")
    @moderator_only()
    async def audit_recent(self, interaction: discord.Interaction, count: app_commands.Range[int, 1, 25] = 10) -> None:
        """Show the latest audit entries privately."""
        assert interaction.guild_id is not None
        records = await self.bot.services.repo.moderation.audit_recent(interaction.guild_id, count)
        await interaction.response.send_message(embed=audit_list_embed(records), ephemeral=True)

    async def _set_channel(
        self, interaction: discord.Interaction, kind: ChannelKind, channel: discord.TextChannel | None
    ) -> None:
        assert interaction.guild is not None
        if channel is not None:
            require_bot_permissions(
                channel, view_channel=True, send_messages=True, embed_links=True, read_message_history=True
            )
        await self.bot.services.repo.guilds.ensure_guild(interaction.guild.id, interaction.guild.name)
        config = await self.bot.services.repo.guilds.set_guild_channel(
            interaction.guild.id, kind=kind, channel_id=channel.id if channel else None, actor_id=interaction.user.id
        )
        self._configs[interaction.guild.id] = config
        what = "Replies needing review" if kind == "review" else "Stance changes"
        if channel is None:
            text = f"{what} are no longer posted in a channel."
        else:
            text = f"{what} will be posted in {channel.mention}."
        if kind == "review":
            waiting = await self.bot.services.repo.moderation.review_queue_size(interaction.guild.id)
            text += f" {waiting} waiting now; `/review next` shows them."
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(Moderation(bot))
