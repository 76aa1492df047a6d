"""``stancebot sandbox`` run twice on the same database: the second run plays and counts its replies too."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from bot.config import load_settings
from bot.sandbox.runner import run_sandbox
from bot.storage.db import sqlite_url

REPLIES = [
    {"prompt": "alliance", "author": "maya", "text": "Japan should pay way more, we protect them for free"},
    {"prompt": "alliance", "author": "kenji", "text": "Japan already pays billions for the bases, it's fair"},
    {"prompt": "defense", "author": "lucas", "text": "Japan should build up its own military now"},
]


@pytest.mark.slow
async def test_a_second_sandbox_run_on_the_same_database(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps(r) for r in REPLIES), encoding="utf-8")
    settings = load_settings(None, environ={})
    for run in (1, 2):
        screen = io.StringIO()
        await run_sandbox(settings, replies=replies, database=sqlite_url(db), console=Console(file=screen, width=120))
        text = screen.getvalue()
        assert len(re.findall(r"^ +→ \w+ \d\.\d\d", text, re.MULTILINE)) == 3, text  # every reply got its stance
        assert "no stance recorded" not in text
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM replies").fetchone()[0] == 3 * run
            assert conn.execute("SELECT count(*) FROM guilds").fetchone()[0] == run
