"""``stancebot sandbox --days N``: simulated days under a fake clock produce one digest per period."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from bot.config import load_settings
from bot.sandbox.days import run_days


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
