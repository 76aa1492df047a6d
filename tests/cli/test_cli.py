"""The command line as a user meets it: one clear line for each mistake, never a traceback."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

#: The checkout (tests run from it).
ROOT = Path(__file__).resolve().parents[2]


def stancebot(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot ARGS`` in a clean environment (no token)."""
    base = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("STANCEBOT_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
        stdin=subprocess.DEVNULL,  # no terminal: commands that would ask must refuse instead
        timeout=120,
        check=False,
    )


def _one_clear_line(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("stancebot:")]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_run_without_token_says_how_to_get_one(tmp_path: Path) -> None:
    proc = stancebot("run", cwd=tmp_path)
    _one_clear_line(proc, "No Discord token: set DISCORD_TOKEN or bot.token_file")
    assert "stancebot sandbox" in proc.stderr


def test_run_with_a_malformed_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[database]\nurl = ""\n', encoding="utf-8")
    _one_clear_line(stancebot("run", "--config", str(cfg)), "database.url: is empty")


def test_token_is_never_read_from_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[bot]\ntoken = "secret-token-value"\n', encoding="utf-8")
    proc = stancebot("run", "--config", str(cfg))
    _one_clear_line(proc, "token must not be in the config file")
    assert "secret-token-value" not in proc.stderr + proc.stdout


@pytest.mark.postgres
def test_database_down_is_one_line(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://nobody:hunter2@127.0.0.1:1/nowhere"
    proc = stancebot("db", "upgrade", env={"STANCEBOT_DATABASE_URL": url})
    _one_clear_line(proc, "Cannot reach the database at postgresql+asyncpg://nobody:***@127.0.0.1:1/nowhere")
    assert "hunter2" not in proc.stderr


def test_db_upgrade_and_downgrade_on_a_sqlite_file(tmp_path: Path) -> None:
    env = {"STANCEBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"}
    up = stancebot("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert "upgraded to head" in up.stdout
    down = stancebot("db", "downgrade", "base", "--yes", env=env)
    assert down.returncode == 0, down.stderr
    assert "undoing:" in down.stderr and "0001 initial schema" in down.stderr  # what it did, said first


def test_sandbox_with_a_bad_replies_file(tmp_path: Path) -> None:
    bad = tmp_path / "replies.jsonl"
    bad.write_text('{"prompt": "alliance", "text": "ok"}\nnot json\n', encoding="utf-8")
    _one_clear_line(
        stancebot("sandbox", "--replies", str(bad)), "replies.jsonl line 2: expected {prompt, author, text}"
    )


def test_sandbox_with_an_unknown_prompt(tmp_path: Path) -> None:
    bad = tmp_path / "replies.jsonl"
    bad.write_text('{"prompt": "nope", "author": "a", "text": "hello"}\n', encoding="utf-8")
    _one_clear_line(stancebot("sandbox", "--replies", str(bad)), "Unknown prompt 'nope'")


def test_json_logs_are_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    from bot.logs import setup_logging

    try:
        setup_logging("INFO", "json")
        logging.getLogger("bot.test").warning("queue at %d", 7, extra={"queue_depth": 7})
        logging.getLogger("bot.test").debug("not shown at INFO")
    finally:
        setup_logging("WARNING")
    [line] = capsys.readouterr().err.strip().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"], record["message"], record["queue_depth"]) == (
        "WARNING",
        "bot.test",
        "queue at 7",
        7,
    )
    assert record["time"][:2] == "20"  # an ISO date


def test_sandbox_under_discords_rate_limits(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    lines = [f'{{"prompt": "alliance", "author": "m{i}", "text": "Japan should pay way more, {i}"}}' for i in range(7)]
    replies.write_text("\n".join(lines) + "\n", encoding="utf-8")
    proc = stancebot("sandbox", "--rate-limits", "--replies", str(replies), env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "Tallies" in proc.stdout and "Traceback" not in proc.stderr


def test_train_prompt_file_learns_the_bots_head_and_evaluate_uses_it(tmp_path: Path) -> None:
    """``train --prompt-file`` runs the bot's background training on a file of labels, on the model that serves the
    prompt (general when shipped, else similarity); ``evaluate --model`` reads the head back on that model."""
    general = ROOT / "models" / "data" / "general"
    rows = (general / "phones_in_school.jsonl").read_text(encoding="utf-8").splitlines()
    random.Random(13).shuffle(rows)
    (tmp_path / "labels.jsonl").write_text("\n".join(rows[:50]) + "\n", encoding="utf-8")
    (tmp_path / "rest.jsonl").write_text("\n".join(rows[50:]) + "\n", encoding="utf-8")
    toml = str(general / "phones_in_school.toml")
    env = {"HF_HUB_OFFLINE": "1"}
    trained = stancebot(
        "train",
        "--prompt-file",
        toml,
        "--data",
        str(tmp_path / "labels.jsonl"),
        "--out",
        str(tmp_path / "head"),
        env=env,
    )
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["n"] == 50 and result["better"] == (result["head_macro_f1"] > result["base_macro_f1"])
    assert result["base"].split(":")[0] in ("general", "similarity") and (tmp_path / "head" / "head.json").is_file()
    evaluated = stancebot(
        "evaluate",
        "--prompt-file",
        toml,
        "--data",
        str(tmp_path / "rest.jsonl"),
        "--model",
        str(tmp_path / "head"),
        env=env,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["model"] == f"{result['base']}+{result['head']}"
