"""``stancebot sandbox --days N``: simulated days under a fake clock produce one digest per period."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from bot.config import load_settings
from bot.sandbox.days import run_days
from bot.storage.db import sqlite_url


@pytest.mark.slow
async def test_two_simulated_days_post_two_daily_digests(tmp_path: Path) -> None:
    screen = io.StringIO()
    settings = load_settings(None, environ={"STANCEBOT_GENERAL_TIMEZONE": "Europe/Berlin"})
    charts = await run_days(
        settings, 2, out_dir=tmp_path, console=Console(file=screen, width=120), replies_per_day=(3, 4)
    )
    text = screen.getvalue()
    assert [p.name for p in charts] == ["digest-01.png", "digest-02.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in charts)
    assert text.count("Daily digest: Is the U.S.-Japan alliance unfair to the U.S.?") == 2
    assert "vs yesterday" in text  # the second digest compares with the first day
    assert "2 digests posted" in text


def _posted(db: Path) -> list[tuple[str, bool]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT period_start, late FROM digest_posts WHERE posted_at IS NOT NULL ORDER BY id")
        return [(str(start), bool(late)) for start, late in rows]


def _replies(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM replies").fetchone()[0])


@pytest.mark.slow
async def test_weekly_digest_is_on_time_and_a_second_run_reuses_the_database(tmp_path: Path) -> None:
    """The bot runs the whole simulation, so no digest is "posted late"; and the first digest covers the first
    week of replies, not the empty week before. A second run on the same database plays its replies too (its
    simulated message ids are not taken by the first run's)."""
    db = tmp_path / "sandbox.db"
    settings = load_settings(None, environ={"STANCEBOT_GENERAL_TIMEZONE": "Europe/Berlin"})
    screens = []
    for run in (1, 2):
        screen = io.StringIO()
        charts = await run_days(
            settings,
            8,
            period="weekly",
            database=sqlite_url(db),
            out_dir=tmp_path / f"run{run}",
            console=Console(file=screen, width=120),
            replies_per_day=(2, 2),
        )
        screens.append(screen.getvalue())
        assert len(charts) == 1, screen.getvalue()
        assert "Posted late" not in screen.getvalue()
        assert "14 replies from" in screen.getvalue()  # the first week of replies, not the empty week before
        assert _replies(db) == 16 * run  # every simulated reply stored, none mistaken for the last run's
    posted = _posted(db)
    assert len(posted) == 2 and not any(late for _, late in posted), posted
