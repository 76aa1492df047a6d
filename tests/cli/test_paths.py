"""Relative paths in the settings resolve against the config file's folder (without one, the working folder),
the token file and a SQLite database alike, wherever the command is started from."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import load_settings, read_token
from tests.cli.helpers import stancebot


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    folder = tmp_path / "etc" / "stancebot"
    (folder / "secret").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "secret" / "token").write_text("token-from-the-config-folder\n", encoding="utf-8")
    cfg = folder / "config.toml"
    cfg.write_text(
        '[bot]\ntoken_file = "secret/token"\n[database]\nurl = "sqlite+aiosqlite:///data/bot.db"\n'
        '[pipeline]\nspool_dir = "spool"\n',
        encoding="utf-8",
    )
    return cfg


def test_relative_paths_resolve_against_the_config_folder(
    conf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(conf, environ={})
    folder = conf.parent
    assert settings.bot.token_file == str(folder / "secret" / "token")
    assert settings.database.url == f"sqlite+aiosqlite:///{folder / 'data' / 'bot.db'}"
    assert settings.pipeline.spool_dir == str(folder / "spool")
    assert read_token(settings, environ={}) == "token-from-the-config-folder"
    # An environment override follows the same rule; absolute paths and in-memory databases stay as they are.
    settings = load_settings(conf, environ={"STANCEBOT_DATABASE_URL": "sqlite+aiosqlite:///other.db"})
    assert settings.database.url == f"sqlite+aiosqlite:///{folder / 'other.db'}"
    for url in (f"sqlite+aiosqlite:///{tmp_path / 'abs.db'}", "sqlite+aiosqlite:///:memory:"):
        assert load_settings(conf, environ={"STANCEBOT_DATABASE_URL": url}).database.url == url


def test_without_a_config_file_they_resolve_against_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={"STANCEBOT_BOT_TOKEN_FILE": "tok"})
    assert settings.bot.token_file == str(tmp_path / "tok")
    assert settings.database.url == f"sqlite+aiosqlite:///{tmp_path / 'stancebot.db'}"


def test_the_cli_creates_the_database_and_reads_the_token_beside_the_config(conf: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    up = stancebot("db", "upgrade", "--config", str(conf), cwd=elsewhere)
    assert up.returncode == 0, up.stderr
    assert (conf.parent / "data" / "bot.db").is_file()
    assert list(elsewhere.iterdir()) == []
    (conf.parent / "secret" / "token").write_text("", encoding="utf-8")
    run = stancebot("run", "--config", str(conf), cwd=elsewhere)
    assert run.returncode == 2
    assert f"bot.token_file {conf.parent / 'secret' / 'token'} is empty" in run.stderr
