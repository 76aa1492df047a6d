"""The layers are checked by a tool: the import-linter contracts in pyproject.toml hold for the package, and they
fail when a module breaks one (a violation planted in a copy of the package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

#: The checkout (tests run from it).
ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_the_package_keeps_its_layer_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_planted_violation_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "bot", tmp_path / "bot", ignore=shutil.ignore_patterns("__pycache__", "_assets"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "bot" / "core" / "tally.py").open("a", encoding="utf-8") as module:
        module.write("\nimport discord  # a planted violation: the domain must not know discord.py\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "bot.core is not allowed to import discord" in result.stdout
    assert "bot.core.tally -> discord" in result.stdout
