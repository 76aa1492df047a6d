"""The digest embed stays within Discord's limits and can ping nobody, however long the quotes."""

from __future__ import annotations

from datetime import UTC, datetime, time

from bot.cogs._digest_render import CHART_NAME, digest_embed
from bot.core.digest import PeriodFigures, Quote, build_digest
from bot.core.periods import Cadence

NOW = datetime(2026, 4, 6, 7, 0, tzinfo=UTC)


def test_nine_long_quotes_fit_in_one_embed() -> None:
    labels = (*(f"stance_{i}" for i in range(9)), "unclear")
    cadence = Cadence("weekly", 0, time(9), "Europe/Berlin")
    periods = cadence.history(cadence.last_complete(NOW), 2)
    figures = [PeriodFigures(p, {label: 3 + i for i, label in enumerate(labels)}, replies=40) for p in periods]
    text = "**bold** [link](https://example.com) @everyone <@123> <@&5> " + "word " * 400
    quotes = [Quote(label, text, 0.9, 1, 2, 3, NOW) for label in labels]
    digest = build_digest(
        prompt_id="p", title="T" * 100, question="Q" * 300, guild_id=9, labels=labels, history=figures, quotes=quotes
    )
    embed = digest_embed(digest, footer="Stancebot digest #1 · model x")
    assert len(embed) <= 6000
    assert len(embed.fields) == 9
    assert embed.image.url == f"attachment://{CHART_NAME}"
    for field in embed.fields:
        assert field.value is not None
        assert "@everyone" not in field.value and "<@" not in field.value
        assert "\\*\\*bold\\*\\*" in field.value  # Markdown in quotes is shown, not rendered
        assert field.value.endswith("[Jump to the reply](https://discord.com/channels/9/3/2)")
