"""The package as a user installs it: a wheel in a fresh virtual environment, run from an empty folder, no torch.

Slow (a wheel build and an install of the base dependencies), but it is the only test that proves the wheel holds
everything the bot needs and that nothing reads the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_tallies() -> dict[str, dict[str, int]]:
    """The tallies README command (a) shows (its sandbox output block): the wheel's sandbox must print the same."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("What the sandbox prints", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return tallies(block)


def tallies(output: str) -> dict[str, dict[str, int]]:
    """Parse the ``Tally: <title>`` blocks of the sandbox's output into ``{title: {label: count}}``."""
    found: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in output.splitlines():
        if line.startswith("Tally: "):
            current = found.setdefault(line.removeprefix("Tally: ").strip(), {})
        elif current is not None and (m := re.match(r"^([a-z_]+)\s+(\d+)\s+[\d.]+%", line)):
            current[m.group(1)] = int(m.group(2))
        elif line.startswith("total"):
            current = None
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_the_sandbox_runs_from_an_empty_folder(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = wheels.glob("stancebot-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=1200)
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, timeout=60, check=False)
    assert no_torch.returncode != 0  # the base install is light: no torch
    package = Path(
        subprocess.run(
            [str(python), "-c", "import bot, os; print(os.path.dirname(bot.__file__))"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    )
    assert (package / "_assets" / "models" / "shipped" / "manifest.json").is_file()
    before = snapshot(package)

    run, home, tmp = tmp_path / "run", tmp_path / "home", tmp_path / "tmp"
    for folder in (run, home, tmp):
        folder.mkdir()
    database = tmp_path / "db" / "sandbox.db"
    database.parent.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "HF_HUB_OFFLINE": "1",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "COLUMNS": "120",
    }
    proc = subprocess.run(
        [str(venv / "bin" / "stancebot"), "sandbox", "--database", f"sqlite+aiosqlite:///{database}"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = readme_tallies()
    assert len(expected) == 2 and all(sum(counts.values()) > 10 for counts in expected.values())
    assert tallies(proc.stdout) == expected
    assert "similarity baseline" not in proc.stdout  # the shipped models serve both prompts
    # nothing written outside the working folder and the database path: not the package, not HOME, not TMPDIR
    assert snapshot(package) == before
    assert list(home.iterdir()) == []
    assert list(tmp.iterdir()) == []
    assert {p.name for p in database.parent.iterdir()} <= {"sandbox.db", "sandbox.db-wal", "sandbox.db-shm"}


@pytest.mark.slow
def test_the_end_to_end_suite_passes_with_the_training_packages_unimportable() -> None:
    """The base install runs the bot: the e2e bot tests (SQLite) with torch, transformers and co. blocked."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.no_torch", "-q", "-k", "sqlite", "tests/e2e/test_bot.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
        env={**os.environ, "PYTEST_ADDOPTS": ""},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"\b\d+ passed\b", proc.stdout)
    assert " failed" not in proc.stdout and " error" not in proc.stdout
