"""Helpers every cog that names a prompt uses: prompt autocomplete, and posting a prompt with its thread."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.cogs._checks import command_allowed, require_bot_permissions
from bot.cogs._render import prompt_embed
from bot.cogs._views import declare_view
from bot.core.prompts import Prompt
from bot.storage.records import PostInfo

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()


async def prompt_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Prompt ids this guild can use that match what was typed (at most 25, as Discord allows); nothing outside a
    server or for someone the command would refuse (a moderator command's choices are for moderators)."""
    bot: Stancebot = interaction.client  # type: ignore[assignment]
    if interaction.guild_id is None or not await command_allowed(interaction):
        return []
    current = current.lower()
    return [
        app_commands.Choice(name=f"{p.id}: {p.title}"[:100], value=p.id)
        for p in bot.prompts_for(interaction.guild_id)
        if current in p.id or current in p.title.lower()
    ][:25]


async def publish_prompt(
    bot: Stancebot, channel: discord.TextChannel, prompt: Prompt, *, posted_by: int | None
) -> PostInfo:
    """Post ``prompt`` in ``channel`` (with the stance buttons when configured), open its thread and start reading
    replies. Used by ``/prompt post`` and by scheduled posts."""
    services = bot.services
    require_bot_permissions(
        channel, send_messages=True, embed_links=True, create_public_threads=True, send_messages_in_threads=True
    )
    await services.repo.guilds.ensure_guild(channel.guild.id, channel.guild.name)
    buttons = services.settings.moderation.declare_buttons and bool(prompt.stance_labels)
    embed = prompt_embed(prompt, buttons=buttons)
    if buttons:
        message = await channel.send(embed=embed, view=declare_view(prompt), allowed_mentions=NONE)
    else:
        message = await channel.send(embed=embed, allowed_mentions=NONE)
    thread = await message.create_thread(name=prompt.title[:100], auto_archive_duration=10080)
    post = await services.repo.prompts.record_post(
        prompt.id,
        guild_id=channel.guild.id,
        channel_id=channel.id,
        message_id=message.id,
        thread_id=thread.id,
        posted_by=posted_by,
    )
    bot.remember_post(post)
    log.info("Posted prompt %s in guild %s thread %s", prompt.id, channel.guild.id, thread.id)
    return post
