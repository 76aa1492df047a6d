"""One error path for every command: each bad input below ends in one line naming it and exit status 2, never a
traceback, and nothing half-written or created by mistake."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from bot.assets import migrations_dir
from bot.storage.db import sqlite_url
from tests.cli.helpers import UNPRIVILEGED, export_json, invoke, one_clear_line, shared_folder, stancebot

# -- the config file ----------------------------------------------------------------------------------------------


def test_a_section_of_the_wrong_type(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("bot = 3\n", encoding="utf-8")
    result = invoke("run", "--config", str(cfg))
    one_clear_line(result.exit_code, result.stderr, "[bot] must be a table")


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_bytes('[general]\ntimezone = "Europe/Zürich"\n'.encode("latin-1"))
    result = invoke("db", "upgrade", "--config", str(cfg))
    one_clear_line(result.exit_code, result.stderr, f"Config file {cfg} is not UTF-8 text")


def test_a_token_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(b"t\xe9ken")
    cfg = tmp_path / "config.toml"
    cfg.write_text('[bot]\ntoken_file = "token"\n', encoding="utf-8")
    result = invoke("run", "--config", str(cfg))
    line = one_clear_line(result.exit_code, result.stderr, "is not UTF-8 text")
    assert "t\xe9ken" not in line and "token" in line


def test_a_config_path_through_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    result = invoke("run", "--config", str(tmp_path / "afile" / "config.toml"))
    one_clear_line(result.exit_code, result.stderr, "cannot be read (Not a directory)")


def test_an_unreadable_config_file() -> None:
    with shared_folder() as folder:
        cfg = folder / "config.toml"
        cfg.write_text("[general]\n", encoding="utf-8")
        cfg.chmod(0o200)  # write-only
        proc = stancebot("run", "--config", str(cfg), user=UNPRIVILEGED, cwd=folder)
    one_clear_line(proc.returncode, proc.stderr, f"'--config': File '{cfg}' is not readable")


# -- analyze ------------------------------------------------------------------------------------------------------

BAD_EXPORTS = [
    pytest.param({"guild_id": "abc"}, "guild id 'abc' is not a Discord id", id="non-numeric-guild-id"),
    pytest.param({"guild_id": 2**70}, f"guild id {2**70} is not a Discord id", id="id-2^70"),
    pytest.param({"guild_id": ["1"]}, "guild id ['1'] is not a Discord id", id="list-for-an-id"),
    pytest.param({"message": {"content": ["a", "b"]}}, "message 1 content must be text, not list", id="list-content"),
    pytest.param({"message": {"type": ["Default"]}}, "message 1 type must be text, not list", id="list-type"),
    pytest.param(
        {"message": {"timestamp": "0001-01-01T00:00:00"}}, "not a time a Discord message can have", id="year-1"
    ),
    pytest.param(
        {"raw": b'{"messages": [{"content": "caf\xe9"}]}'}, "export.json is not UTF-8 text (byte", id="latin-1"
    ),
]


@pytest.mark.parametrize(("export", "expected"), BAD_EXPORTS)
def test_analyze_a_bad_export(tmp_path: Path, export: dict[str, object], expected: str) -> None:
    path = export_json(tmp_path / "export.json", **export)  # type: ignore[arg-type]
    out = tmp_path / "out"
    result = invoke("analyze", str(path), "--prompt", "alliance", "--out", str(out))
    one_clear_line(result.exit_code, result.stderr, expected)
    assert not out.exists()  # checked before anything is written


def test_analyze_with_an_unknown_database_driver(tmp_path: Path) -> None:
    path = export_json(tmp_path / "export.json")
    result = invoke("analyze", str(path), "--prompt", "alliance", "--database", "mysql://u:secret@h/db")
    line = one_clear_line(result.exit_code, result.stderr, "unknown driver 'mysql'")
    assert "secret" not in line


@pytest.mark.parametrize("where", ["through-a-file", "read-only"])
def test_analyze_to_an_unwritable_out(tmp_path: Path, where: str) -> None:
    path = export_json(tmp_path / "export.json")
    if where == "through-a-file":
        (tmp_path / "afile").write_text("x", encoding="utf-8")
        out, reason = tmp_path / "afile" / "out", "Not a directory"
        result = invoke("analyze", str(path), "--prompt", "alliance", "--out", str(out))
        code, stderr = result.exit_code, result.stderr
    else:
        with shared_folder() as folder:
            path = export_json(folder / "export.json")
            out, reason = folder / "ro", "Permission denied"
            out.mkdir()
            out.chmod(0o555)
            proc = stancebot("analyze", str(path), "--prompt", "alliance", "--out", str(out), user=UNPRIVILEGED)
            code, stderr = proc.returncode, proc.stderr
    one_clear_line(code, stderr, f"cannot write --out {out}: {reason}")


# -- export -------------------------------------------------------------------------------------------------------


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "bot.db")
    assert invoke("db", "upgrade", "--database", url).exit_code == 0
    return url


def test_export_to_a_missing_folder(tmp_path: Path, migrated: str) -> None:
    out = tmp_path / "nope" / "x.csv"
    result = invoke("export", "--corrections", "--database", migrated, "--out", str(out))
    one_clear_line(result.exit_code, result.stderr, f"--out {out}: the folder {out.parent} does not exist")


def test_export_to_an_unwritable_folder() -> None:
    with shared_folder() as folder:
        url = sqlite_url(folder / "bot.db")
        assert invoke("db", "upgrade", "--database", url).exit_code == 0
        (folder / "bot.db").chmod(0o666)
        ro = folder / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        out = ro / "x.jsonl"
        proc = stancebot("export", "--corrections", "--database", url, "--out", str(out), user=UNPRIVILEGED)
        one_clear_line(proc.returncode, proc.stderr, f"cannot write --out {out}: Permission denied")
        assert list(ro.iterdir()) == []  # no temporary file left behind


def test_export_with_an_unknown_driver_or_a_missing_sqlite_file(tmp_path: Path) -> None:
    result = invoke("export", "--corrections", "--database", "oracle://x/y")
    one_clear_line(result.exit_code, result.stderr, "unknown driver 'oracle'")
    missing = tmp_path / "missing.db"
    result = invoke("export", "--corrections", "--database", sqlite_url(missing))
    one_clear_line(result.exit_code, result.stderr, f"There is no SQLite database at {missing}")
    assert not missing.exists()  # not silently created


# -- db -----------------------------------------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    with sqlite3.connect(url.removeprefix("sqlite+aiosqlite:///")) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_db_upgrade_to_an_unknown_revision(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "x.db")
    result = invoke("db", "upgrade", "0099", "--database", url)
    one_clear_line(result.exit_code, result.stderr, "Unknown schema revision '0099'; known: head, base, 0001")


def test_db_downgrade_needs_a_revision_and_a_confirmation(migrated: str) -> None:
    before = _tables(migrated)
    assert "replies" in before
    result = invoke("db", "downgrade", "--database", migrated)
    one_clear_line(result.exit_code, result.stderr, "Missing argument 'REVISION'")
    result = invoke("db", "downgrade", "base", "--database", migrated)  # no terminal to ask on, no --yes
    one_clear_line(result.exit_code, result.stderr, "pass --yes to confirm")
    newest = max((migrations_dir() / "versions").glob("0*.py")).read_text(encoding="utf-8")
    head = re.search(r'^revision: str = "([^"]+)"', newest, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert f"from {head} to base, undoing:" in result.stderr  # says what it would do first
    assert _tables(migrated) == before  # and did nothing
    result = invoke("db", "downgrade", "base", "--database", migrated, input="n\n")
    assert result.exit_code == 2 and _tables(migrated) == before
    result = invoke("db", "downgrade", "0002", "--yes", "--database", migrated)
    assert result.exit_code == 0, result.stderr
    assert "0003 moderation" in result.stderr and "downgraded to 0002" in result.stdout
    assert "replies" in _tables(migrated)
    result = invoke("db", "downgrade", "base", "--yes", "--database", migrated)
    assert result.exit_code == 0 and "replies" not in _tables(migrated)


# -- the sandbox --------------------------------------------------------------------------------------------------


def test_sandbox_with_a_sqlite_file_in_a_missing_folder(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "nope" / "sandbox.db")
    result = invoke("sandbox", "--database", url)
    one_clear_line(result.exit_code, result.stderr, "The folder of the SQLite database")
    assert not (tmp_path / "nope").exists()


def test_sandbox_with_a_latin1_replies_file(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    replies.write_bytes('{"prompt": "alliance", "author": "a", "text": "café"}\n'.encode("latin-1"))
    result = invoke("sandbox", "--replies", str(replies))
    one_clear_line(result.exit_code, result.stderr, "replies.jsonl is not UTF-8 text")


def test_usage_mistakes_are_one_line_too() -> None:
    result = invoke("analyze", "--prompt", "alliance")
    one_clear_line(result.exit_code, result.stderr, "analyze: Missing argument 'EXPORT'")
    result = invoke("export", "--guild", "12x")
    one_clear_line(result.exit_code, result.stderr, "'12x' is not a valid integer")
    result = invoke("nope")
    one_clear_line(result.exit_code, result.stderr, "No such command 'nope'")
