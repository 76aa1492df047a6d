"""A digest as a Discord embed with its chart attached (the only place that knows the digest's Discord look)."""

from __future__ import annotations

import io

import discord

from bot.core.digest import Digest, Quote, standings_table
from bot.core.text import shorten

COLOUR = discord.Colour.blurple()
LATE_COLOUR = discord.Colour.orange()
CHART_NAME = "digest.png"
#: Discord's limit on an embed's characters is 6,000; stay clear of it.
EMBED_BUDGET = 5800


def jump_url(guild_id: int, quote: Quote) -> str:
    """The link to the quoted message (links never ping)."""
    return f"https://discord.com/channels/{guild_id}/{quote.channel_id}/{quote.message_id}"


def _quote_value(digest: Digest, quote: Quote, limit: int) -> str:
    text = discord.utils.escape_markdown(quote.safe_text(limit))
    return shorten(f"> {text}\n[Jump to the reply]({jump_url(digest.guild_id, quote)})", 1024)


def digest_embed(digest: Digest, *, footer: str) -> discord.Embed:
    """The digest embed: activity and standings, one representative quote per stance, the chart as image.

    Quoted text has its mentions neutralised and its Markdown escaped; the message is sent with
    ``AllowedMentions.none()`` as well, so nothing in a digest can ping.
    """
    lines = []
    if digest.late:
        due = digest.period.local_end()
        lines.append(f"⏰ **Posted late**: the bot was offline when this digest was due ({due:%a %d %b %H:%M}).")
    lines += [
        f"**{discord.utils.escape_markdown(digest.question)}**",
        f"*{digest.period.describe()}*",
        "",
        f"{digest.activity_sentence()}.",
        f"{digest.leader_sentence()}.",
        f"```\n{standings_table(digest, bar_width=10)}\n```",
        f"{digest.overall_sentence()}.",
    ]
    if digest.declared_sentence():
        lines.append(f"{digest.declared_sentence()}.")
    embed = discord.Embed(
        title=shorten(digest.heading, 256),
        description=shorten("\n".join(lines), 4096),
        colour=LATE_COLOUR if digest.late else COLOUR,
        timestamp=min(digest.period.end, digest.generated_at or digest.period.end),
    )
    quotes = [q for q in (digest.quote_for(label) for label in digest.stance_labels()) if q is not None]
    for limit in (300, 150, 80):
        fields = [(f"Most confident `{q.label}` ({q.confidence:.2f})", _quote_value(digest, q, limit)) for q in quotes]
        size = len(embed.title or "") + len(embed.description or "") + len(footer)
        size += sum(len(name) + len(value) for name, value in fields)
        if size <= EMBED_BUDGET:
            break
    for name, value in fields[:24]:
        embed.add_field(name=name, value=value, inline=False)
    embed.set_image(url=f"attachment://{CHART_NAME}")
    embed.set_footer(text=shorten(footer, 2048))
    return embed


def chart_file(png: bytes) -> discord.File:
    """The chart as an upload the embed refers to."""
    return discord.File(io.BytesIO(png), filename=CHART_NAME, description="Stance shares and their trend")
