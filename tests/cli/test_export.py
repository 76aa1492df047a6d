"""``stancebot export``: a prompt's replies as CSV/JSON and corrections as training data, from a real database."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli.export import export
from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.db import make_sessionmaker, sqlite_url
from bot.storage.repository import Repository
from tests.conftest import add_reply, save_stance

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
async def filled_db(engine, catalog: PromptCatalog, db_url: str) -> str:  # type: ignore[no-untyped-def]
    """A database with two replies in guild 1, one of them relabelled by a moderator."""
    repo = Repository(make_sessionmaker(engine))
    await repo.guilds.ensure_guild(1, "g")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    post = await repo.prompts.record_post("alliance", guild_id=1, channel_id=2, message_id=3, thread_id=4, posted_by=5)
    for mid, text, label in [(10, "Japan should pay more", "unfair"), (11, "hmm, the bases", "unclear")]:
        ref = await add_reply(repo, post, message_id=mid, author_id=mid, content=text, created_at=T0)
        assert ref is not None
        await save_stance(repo, ref, StanceResult(label, 0.7), model_version="m")
    await repo.moderation.relabel(11, guild_id=1, label="mutual_benefit", actor_id=5)
    return db_url


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(export, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_export_csv_and_json(filled_db: str, tmp_path: Path) -> None:
    code, out, _ = _run("--prompt", "alliance", "--guild", "1", "--database", filled_db)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["message_id"], r["label"], r["source"]) for r in rows] == [
        ("10", "unfair", "model"),
        ("11", "mutual_benefit", "moderator"),
    ]
    target = tmp_path / "out.json"
    code, _, err = _run("--prompt", "alliance", "--guild", "1", "--format", "json", "--out", str(target),
                        "--database", filled_db)  # fmt: skip
    assert code == 0 and "Wrote 2 replies" in err
    assert [item["text"] for item in json.loads(target.read_text())] == ["Japan should pay more", "hmm, the bases"]


def test_export_corrections_is_training_data(filled_db: str) -> None:
    code, out, _ = _run("--corrections", "--database", filled_db)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"text": "hmm, the bases", "label": "mutual_benefit", "prompt": "alliance", "source": "moderator"}
    ]


def test_export_mistakes_get_one_line(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "missing" / "x.db")
    code, _, err = _run("--prompt", "alliance", "--database", url)
    assert code == 2 and err.startswith("stancebot: Give --prompt and --guild")
    code, _, err = _run("--prompt", "alliance", "--guild", "1", "--database", url)
    assert code == 2 and err.startswith("stancebot: There is no SQLite database at")
    assert not (tmp_path / "missing").exists()


def test_export_needs_a_migrated_database(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a SQLite file with no tables
    code, _, err = _run("--corrections", "--database", sqlite_url(empty))
    assert code == 2 and "run `stancebot db upgrade`" in err


HOSTILE = ["=1+1", "+cmd|' /C calc'!A0", "-5 is my answer", "@SUM(A1)", "\tfair", "\rfair", "plain \x1b[2J\x00end"]


@pytest.fixture
async def hostile_db(engine, catalog: PromptCatalog, db_url: str) -> str:  # type: ignore[no-untyped-def]
    """A database whose replies start like spreadsheet formulas or carry terminal escapes."""
    repo = Repository(make_sessionmaker(engine))
    await repo.guilds.ensure_guild(1, "g")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    post = await repo.prompts.record_post("alliance", guild_id=1, channel_id=2, message_id=3, thread_id=4, posted_by=5)
    for mid, text in enumerate(HOSTILE, start=10):
        ref = await add_reply(repo, post, message_id=mid, author_id=mid, content=text, created_at=T0)
        assert ref is not None
        await save_stance(repo, ref, StanceResult("unfair", 0.7), model_version="m")
    return db_url


def test_export_csv_cells_never_run_as_formulas(hostile_db: str) -> None:
    code, out, _ = _run("--prompt", "alliance", "--guild", "1", "--database", hostile_db)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    texts = [r["text"] for r in rows]
    assert texts[:6] == ["'" + t for t in HOSTILE[:6]]
    assert texts[6].startswith("plain")
    assert [r["confidence"] for r in rows] == ["0.7"] * len(HOSTILE)  # numbers are left alone
    code, out, _ = _run("--prompt", "alliance", "--guild", "1", "--format", "json", "--database", hostile_db)
    assert [item["text"] for item in json.loads(out)][:6] == HOSTILE[:6]  # JSON is not a spreadsheet: as stored


def test_export_to_a_terminal_shows_control_characters_as_escapes(hostile_db: str) -> None:
    master, slave = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STANCEBOT_")}
        proc = subprocess.run(
            [sys.executable, "-m", "bot", "export", "--prompt", "alliance", "--guild", "1", "--database", hostile_db],
            stdout=slave,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal is closed once everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    if "sqlite" in hostile_db:  # PostgreSQL holds the text as Discord shows it, without ESC and NUL
        assert b"plain \\x1b[2J\\x00end" in shown
    assert b"\x1b" not in shown and b"\x00" not in shown
    assert b"\\rfair" in shown and b"\rfair" not in shown  # a lone carriage return would overwrite the line
