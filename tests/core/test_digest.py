"""The digest as pure data, its terminal and Markdown renderings, and the chart image."""

from __future__ import annotations

import io
from datetime import UTC, datetime, time

import pytest
from matplotlib.image import imread

from bot.core.chart import render_chart
from bot.core.digest import Digest, PeriodFigures, Quote, arrow, build_digest, render_markdown, render_terminal
from bot.core.periods import Cadence

LABELS = ("unfair", "fair", "mutual_benefit", "unclear")
CADENCE = Cadence("weekly", 0, time(9), "Europe/Berlin")
NOW = datetime(2026, 4, 6, 7, 0, tzinfo=UTC)


def _digest(*, history: int = 3, quotes: tuple[Quote, ...] = (), late: bool = False) -> Digest:
    periods = CADENCE.history(CADENCE.last_complete(NOW), history)
    standings = [
        {"unfair": 2, "fair": 2, "mutual_benefit": 0, "unclear": 0},
        {"unfair": 3, "fair": 4, "mutual_benefit": 1, "unclear": 2},
        {"unfair": 8, "fair": 5, "mutual_benefit": 2, "unclear": 5},
    ][-history:]
    figures = [
        PeriodFigures(p, s, replies=10 * (i + 1), members=4 + i, classified=10 * (i + 1), unclear=i + 1)
        for i, (p, s) in enumerate(zip(periods, standings, strict=True))
    ]
    return build_digest(
        prompt_id="alliance",
        title="Is the U.S.-Japan alliance unfair to the U.S.?",
        question="Is the alliance unfair to the U.S.?",
        guild_id=1,
        labels=LABELS,
        history=figures,
        quotes=quotes,
        overall={"unfair": 30, "fair": 12, "mutual_benefit": 6, "unclear": 2},
        late=late,
    )


def _quote(label: str, text: str, confidence: float = 0.9) -> Quote:
    return Quote(label, text, confidence, author_id=5, message_id=6, channel_id=7, created_at=NOW)


def test_shares_and_deltas_in_percentage_points() -> None:
    digest = _digest()
    lines = {line.label: line for line in digest.lines()}
    assert digest.current.counted == 20 and digest.previous is not None and digest.previous.counted == 10
    assert lines["unfair"].share == pytest.approx(0.40)
    assert lines["unfair"].previous_share == pytest.approx(0.30)
    assert lines["unfair"].delta_pts == pytest.approx(10.0)
    assert lines["fair"].delta_pts == pytest.approx(-15.0)
    assert digest.current.unclear_share == pytest.approx(3 / 30)
    assert (arrow(10.0), arrow(-15.0), arrow(0.01)) == ("▲ 10.0 pts", "▼ 15.0 pts", "= 0.0 pts")
    assert digest.activity_sentence() == (
        "30 replies from 6 members this week (+10 vs last week); 10% of the replies unclear"
    )
    assert digest.leader_sentence() == "This week: unfair leads with 40% of 20 counted"
    assert digest.overall_sentence() == "Overall tally: unfair leads with 60% of 50 counted"


def test_one_quote_per_stance_and_never_for_unclear() -> None:
    quotes = (_quote("fair", "fair one"), _quote("unclear", "huh?"), _quote("nope", "not a label"))
    digest = _digest(quotes=quotes)
    assert [q.label for q in digest.quotes] == ["fair"]
    assert digest.quote_for("unfair") is None


def test_terminal_rendering_neutralises_mentions_and_says_late() -> None:
    text = render_terminal(_digest(quotes=(_quote("unfair", "@everyone <@123> <@&9> pay up!\nnow"),), late=True))
    assert "Weekly digest: Is the U.S.-Japan alliance unfair to the U.S.?" in text
    assert "Mon 30 Mar 2026 09:00 – Mon 06 Apr 2026 09:00 (Europe/Berlin)" in text
    assert "Posted late" in text
    assert "unfair              8   40.0%     ▲ 10.0 pts" in text
    assert '"@\u200beveryone @user @role pay up! now"' in text
    assert "<@" not in text
    assert "Trend" in text and "30 Mar" in text


def test_markdown_has_tables_chart_and_quotes() -> None:
    md = render_markdown(_digest(quotes=(_quote("fair", "a | pipe"),)))
    assert md.startswith("# Weekly digest: ")
    assert "| `unfair` | 8 | 40.0% | ▲ 10.0 pts |" in md
    assert "![Stance shares this week and the trend](chart.png)" in md
    assert "> a | pipe" in md
    assert "| 30 Mar | 40% | 25% | 10% | 25% | 20 |" in md


def test_a_first_digest_without_history_or_replies() -> None:
    digest = _digest(history=1)
    empty = build_digest(
        prompt_id="alliance",
        title="t",
        question="q",
        guild_id=1,
        labels=LABELS,
        history=[PeriodFigures(digest.period, dict.fromkeys(LABELS, 0))],
    )
    text = render_terminal(empty)
    assert "0 replies from 0 members this week" in text
    assert "This week: no stance counted yet." in text
    assert "Overall tally: no stance counted yet." in text
    assert "vs last" not in render_terminal(digest)
    assert render_chart(empty).startswith(b"\x89PNG")


def test_chart_is_a_readable_png() -> None:
    png = render_chart(_digest(history=3))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = imread(io.BytesIO(png))
    height, width = pixels.shape[:2]
    assert (width, height) == (1100, 484)
    assert len(png) < 200_000  # far below Discord's upload limit
