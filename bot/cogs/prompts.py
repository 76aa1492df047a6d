"""``/prompt``: post a discussion prompt with its thread."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import moderator_only, require_bot_permissions
from bot.cogs._render import prompt_embed

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)


async def prompt_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Prompt ids matching what was typed (at most 25, as Discord allows)."""
    catalog = interaction.client.services.catalog  # type: ignore[attr-defined]
    current = current.lower()
    return [
        app_commands.Choice(name=f"{p.id}: {p.title}"[:100], value=p.id)
        for p in catalog
        if current in p.id or current in p.title.lower()
    ][:25]


class Prompts(commands.GroupCog, group_name="prompt", group_description="Discussion prompts"):
    """Posting prompts."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="post", description="Post a discussion prompt here and open a thread for replies")
    @app_commands.describe(prompt="Which prompt to post")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_messages=True)
    @moderator_only()
    async def post(self, interaction: discord.Interaction, prompt: str) -> None:
        """Post ``prompt`` as an embed and open its thread."""
        services = self.bot.services
        definition = services.catalog.get(prompt)
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel) or interaction.guild is None:
            await interaction.response.send_message("Prompts can be posted in text channels only.", ephemeral=True)
            return
        require_bot_permissions(
            channel,
            send_messages=True,
            embed_links=True,
            create_public_threads=True,
            send_messages_in_threads=True,
        )
        await interaction.response.defer(ephemeral=True, thinking=True)
        await services.repo.ensure_guild(interaction.guild.id, interaction.guild.name)
        message = await channel.send(embed=prompt_embed(definition), allowed_mentions=discord.AllowedMentions.none())
        thread = await message.create_thread(name=definition.title[:100], auto_archive_duration=10080)
        post = await services.repo.record_post(
            definition.id,
            guild_id=interaction.guild.id,
            channel_id=channel.id,
            message_id=message.id,
            thread_id=thread.id,
            posted_by=interaction.user.id,
        )
        self.bot.remember_post(post)
        log.info("Posted prompt %s in guild %s thread %s", definition.id, interaction.guild.id, thread.id)
        await interaction.followup.send(f"Posted **{definition.id}**; replies are read in {thread.mention}.")


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(Prompts(bot))
