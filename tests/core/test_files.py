"""Files are written whole or not at all (``bot.core.files``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.files import atomic_writer, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "stances.csv"
    write_text_atomic(target, "old\n")

    def half_a_write() -> None:
        with atomic_writer(target) as fh:
            fh.write("new, half")
            raise RuntimeError("the disk is full")

    with pytest.raises(RuntimeError):
        half_a_write()
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stances.csv"]  # no temporary file left


def test_a_finished_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "chart.png"
    write_bytes_atomic(target, b"one")
    write_bytes_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    write_json_atomic(tmp_path / "sub" / "m.json", {"a": 1})
    assert (tmp_path / "sub" / "m.json").read_text(encoding="utf-8") == '{\n  "a": 1\n}\n'


def test_errors_name_the_target_not_the_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "x.csv"
    with pytest.raises(FileNotFoundError) as caught:
        write_text_atomic(target, "x")
    assert caught.value.filename == str(target)
