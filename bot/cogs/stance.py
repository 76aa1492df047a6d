"""Reading replies in prompt threads, and ``/stance tally``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._render import tally_embed
from bot.cogs.prompts import prompt_autocomplete
from bot.core.errors import StorageError
from bot.core.prompts import UNCLEAR
from bot.pipeline import ReplyOutcome

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)


class StanceCog(commands.GroupCog, group_name="stance", group_description="Stances and tallies"):
    """Classifies replies and shows tallies."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        super().__init__()

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Store and classify a member's reply in a prompt thread."""
        if message.author.bot or message.webhook_id is not None or not isinstance(message.channel, discord.Thread):
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        post = await self.bot.post_for_thread(message.channel.id)
        if post is None:
            return
        try:
            outcome = await self.bot.services.pipeline.on_reply(
                post,
                message_id=message.id,
                author_id=message.author.id,
                content=message.content,
                created_at=message.created_at,
            )
        except StorageError:
            log.exception("Reply %s in thread %s could not be stored", message.id, message.channel.id)
            return
        if outcome is not None:
            await self._announce(outcome, message)

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """Reclassify an edited reply."""
        content = payload.data.get("content")
        if content is None or await self.bot.post_for_thread(payload.channel_id) is None:
            return
        outcome = await self.bot.services.pipeline.on_edit(payload.message_id, content, discord.utils.utcnow())
        if outcome is not None:
            self.bot.dispatch("stance_recorded", outcome)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """Retract a deleted reply."""
        if await self.bot.post_for_thread(payload.channel_id) is None:
            return
        if await self.bot.services.pipeline.on_delete(payload.message_id):
            self.bot.dispatch("reply_retracted", payload.message_id)

    async def _announce(self, outcome: ReplyOutcome, message: discord.Message) -> None:
        self.bot.dispatch("stance_recorded", outcome)
        if self.bot.services.settings.bot.react_to_replies:
            emoji = "❔" if outcome.result.label == UNCLEAR else "🗳️"
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException:
                log.debug("Could not react to %s", message.id)

    @app_commands.command(name="tally", description="Show how many members take each stance on a prompt")
    @app_commands.describe(prompt="Which prompt", public="Show the tally to everyone in the channel")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @app_commands.guild_only()
    async def tally(self, interaction: discord.Interaction, prompt: str, public: bool = False) -> None:
        """Counts and shares per stance."""
        services = self.bot.services
        definition = services.catalog.get(prompt)
        assert interaction.guild_id is not None
        tally = await services.repo.tally(definition, interaction.guild_id)
        version = services.stance.model(definition.id).version
        note = f"{tally.total} counted · model {version}"
        if version.startswith("similarity:"):
            note += " (similarity baseline: no trained model yet)"
        ephemeral = services.settings.bot.tally_ephemeral and not public
        await interaction.response.send_message(
            embed=tally_embed(definition, tally, model_note=note),
            ephemeral=ephemeral,
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(StanceCog(bot))
