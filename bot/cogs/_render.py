"""Render domain objects as Discord embeds (the only place that knows their Discord look)."""

from __future__ import annotations

import discord

from bot.core.prompts import Prompt
from bot.core.tally import Tally, render_table
from bot.core.text import shorten

COLOUR = discord.Colour.blurple()


def prompt_embed(prompt: Prompt) -> discord.Embed:
    """The message that opens a discussion: the question, context and the stances counted."""
    embed = discord.Embed(title=shorten(prompt.title, 256), description=prompt.question, colour=COLOUR)
    embed.add_field(name="Context", value=shorten(prompt.summary, 1024), inline=False)
    for label in prompt.stance_labels:
        embed.add_field(name=f"`{label.name}`", value=shorten(label.description, 1024), inline=False)
    if prompt.source:
        embed.add_field(name="Source", value=shorten(prompt.source, 1024), inline=False)
    embed.set_footer(text="Reply in the thread below. Stancebot counts each member's latest stance.")
    return embed


def tally_embed(prompt: Prompt, tally: Tally, *, model_note: str) -> discord.Embed:
    """Counts and shares per stance as a monospace table."""
    embed = discord.Embed(
        title=shorten(f"Tally: {prompt.title}", 256),
        description=f"```\n{render_table(tally)}\n```",
        colour=COLOUR,
    )
    embed.set_footer(text=shorten(model_note, 2048))
    return embed
