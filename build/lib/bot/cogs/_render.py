"""Render domain objects as Discord embeds (the only place that knows their Discord look)."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.core.counting import Comparison, render_comparison
from bot.core.moderation import AuditRecord, message_link
from bot.core.prompts import Prompt
from bot.core.tally import Tally, render_table
from bot.core.text import neutralise_mentions, shorten
from bot.storage.records import PromptOverview, ReviewInfo

COLOUR = discord.Colour.blurple()
REVIEW_COLOUR = discord.Colour.orange()
DONE_COLOUR = discord.Colour.green()


def prompt_embed(prompt: Prompt, *, buttons: bool = False) -> discord.Embed:
    """The message that opens a discussion: the question, context and the stances counted."""
    embed = discord.Embed(title=shorten(prompt.title, 256), description=prompt.question, colour=COLOUR)
    embed.add_field(name="Context", value=shorten(prompt.summary, 1024), inline=False)
    for label in prompt.stance_labels:
        embed.add_field(name=f"`{label.name}`", value=shorten(label.description, 1024), inline=False)
    if prompt.source:
        embed.add_field(name="Source", value=shorten(prompt.source, 1024), inline=False)
    footer = "Reply in the thread below. Stancebot counts each member's latest stance."
    if buttons:
        footer += " Or declare your stance with a button (press it again to take it back)."
    embed.set_footer(text=footer)
    return embed


def tally_embed(
    prompt: Prompt, tally: Tally, *, model_note: str, comparison: Comparison | None = None, notice: str = ""
) -> discord.Embed:
    """Counts and shares per stance as a monospace table; declared vs model beside it when members declared."""
    description = f"```\n{render_table(tally)}\n```"
    embed = discord.Embed(title=shorten(f"Tally: {prompt.title}", 256), description=description, colour=COLOUR)
    if notice:
        embed.add_field(name="Note", value=shorten(notice, 1024), inline=False)
    if comparison is not None and any(comparison.declared.values()):
        embed.add_field(
            name="Model vs declared stances",
            value=shorten(f"```\n{render_comparison(comparison)}\n```", 1024),
            inline=False,
        )
    embed.set_footer(text=shorten(model_note, 2048))
    return embed


def review_embed(info: ReviewInfo) -> discord.Embed:
    """A reply the model was unsure about, for moderators to label."""
    text = info.text if info.text is not None else "(text removed)"
    embed = discord.Embed(
        title=shorten(f"Review: {info.prompt_slug}", 256),
        description=shorten(neutralise_mentions(text), 3000),
        colour=REVIEW_COLOUR,
    )
    embed.add_field(name="Model leaned to", value=f"`{info.model_label}` ({info.confidence:.0%})", inline=True)
    embed.add_field(name="Reply", value=message_link(info.guild_id, info.thread_id, info.message_id), inline=True)
    embed.set_footer(text=f"Review #{info.id} · pick the stance this reply takes, or skip")
    return embed


def review_done_embed(info: ReviewInfo, outcome: str) -> discord.Embed:
    """A handled review item: the decision, without the reply's text."""
    embed = discord.Embed(title=shorten(f"Reviewed: {info.prompt_slug}", 256), description=outcome, colour=DONE_COLOUR)
    embed.add_field(name="Reply", value=message_link(info.guild_id, info.thread_id, info.message_id), inline=False)
    embed.set_footer(text=f"Review #{info.id}")
    return embed


def audit_embed(record: AuditRecord) -> discord.Embed:
    """One audit entry for the mod-log channel."""
    embed = discord.Embed(title=shorten(record.describe(), 256), colour=COLOUR, timestamp=record.created_at)
    if record.actor_id is not None:
        embed.add_field(name="By", value=f"<@{record.actor_id}>", inline=True)
    if record.guild_id and record.channel_id and record.message_id:
        embed.add_field(
            name="Reply", value=message_link(record.guild_id, record.channel_id, record.message_id), inline=True
        )
    embed.set_footer(text=f"audit #{record.id}")
    return embed


def audit_list_embed(records: Sequence[AuditRecord]) -> discord.Embed:
    """The latest audit entries, one line each."""
    lines = []
    for r in records:
        who = f" by <@{r.actor_id}>" if r.actor_id else ""
        lines.append(f"<t:{int(r.created_at.timestamp())}:R> {r.describe()}{who}")
    text = "\n".join(lines) or "Nothing recorded yet."
    return discord.Embed(title="Audit log", description=shorten(text, 4000), colour=COLOUR)


STATE_TEXT = {"unposted": "not posted", "open": "open", "closed": "closed"}


def prompt_list_embed(prompts: Sequence[PromptOverview]) -> discord.Embed:
    """The prompts a guild can use, with their state here."""
    lines = []
    for p in prompts:
        origin = "added here" if p.guild_owned else "built in"
        lines.append(
            f"`{p.slug}` {shorten(p.title, 80)} · {STATE_TEXT[p.state]} · {p.posts} posts · {p.counted} counted"
            f" · {origin}"
        )
    text = "\n".join(lines) or "No prompts yet: add one with /prompt add."
    return discord.Embed(title="Prompts", description=shorten(text, 4000), colour=COLOUR)
