"""Running ``stancebot`` as a user does, and checking that a mistake ends in one clear line."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from bot.cli import main

#: The checkout (tests run from it).
ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without a token or ``STANCEBOT_*`` settings, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("STANCEBOT_")}
    return {**base, **extra}


def stancebot(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bot ARGS`` in a clean environment (no token, no terminal); as ``user`` when given (root
    only: ``setpriv``)."""
    prefix: list[str] = []
    if user is not None:
        entry = pwd.getpwnam(user)
        prefix = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups", "--"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=clean_env(**(env or {})),
        cwd=cwd or ROOT,
        stdin=subprocess.DEVNULL,
        timeout=180,
        check=False,
    )


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """Run ``stancebot ARGS`` in this process (click's runner: no terminal, stderr apart)."""
    return CliRunner().invoke(main, list(args), env=env, input=input, prog_name="stancebot")


def one_clear_line(code: int, stderr: str, expected: str = "") -> str:
    """Assert status 2, no traceback and exactly one ``stancebot:`` line on stderr (containing ``expected``)."""
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("stancebot:")]
    assert len(lines) == 1, stderr
    assert expected in lines[0], lines[0]
    return lines[0]


def export_json(
    path: Path, *, guild_id: Any = "1", message: dict[str, Any] | None = None, raw: bytes | None = None
) -> Path:
    """A small DiscordChatExporter-shaped export with one member message (fields overridable)."""
    if raw is not None:
        path.write_bytes(raw)
        return path
    msg = {
        "id": "10",
        "type": "Default",
        "timestamp": "2026-01-05T09:00:00+00:00",
        "content": "Japan should pay way more, we protect them for free",
        "author": {"id": "7", "name": "maya", "isBot": False},
    }
    data = {
        "guild": {"id": guild_id, "name": "g"},
        "channel": {"id": "5", "name": "c"},
        "messages": [msg | (message or {})],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


#: Who runs the commands that must meet a permission error: root reads and writes anything.
UNPRIVILEGED = "nobody" if os.geteuid() == 0 else None


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A folder every user may enter and write (pytest's own are private to the user running the tests), so that
    :data:`UNPRIVILEGED` can meet exactly the permission error a test sets up, and no other."""
    folder = Path(tempfile.mkdtemp(prefix="stancebot-perm-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for path in folder.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)
