"""The on-disk spool: durable, bounded, ordered, replayable after a crash, one process per folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.core.errors import ConfigError
from bot.durability import REJECTED, Spool


def _records(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"op": "reply", "message_id": i, "content": f"text {i} ✓"} for i in range(start, start + n)]


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", segment_bytes=200)
    spool.open()
    assert spool.append(_records(10)) == 10
    assert spool.append(_records(5, 10)) == 5
    assert len(spool) == 15
    segments = spool.sealed_segments()
    assert len(segments) > 1
    seen = [r["message_id"] for segment in segments for r in spool.read(segment)]
    assert seen == list(range(15))
    for segment in segments:
        spool.remove(segment)
    assert len(spool) == 0
    assert spool.size_bytes == 0
    spool.close()
    assert not (tmp_path / "s").exists()  # an empty spool leaves nothing behind


def test_it_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=400)
    spool.open()
    accepted = spool.append(_records(50))
    assert 0 < accepted < 50
    assert spool.size_bytes <= 400
    assert spool.append(_records(1, 100)) == 0
    spool.close()


def test_what_a_crashed_process_left_is_found_and_a_torn_line_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.open()
    spool.append(_records(3))
    # A crash: no close(); the last line was half written.
    [segment] = sorted((tmp_path / "s").glob("segment-*.jsonl"))
    with segment.open("ab") as out:
        out.write(b'{"op": "reply", "message_id": 3, "cont')
    spool._lock_file.close()  # type: ignore[union-attr]  # the dead process's lock goes with it

    again = Spool(tmp_path / "s")
    again.open()
    assert len(again) == 4  # counted by lines: the torn one is only found unreadable on replay
    [found] = again.sealed_segments()
    assert [r["message_id"] for r in again.read(found)] == [0, 1, 2]
    again.append(_records(1, 10))
    assert [r["message_id"] for s in again.sealed_segments() for r in again.read(s)] == [0, 1, 2, 10]
    again.close()


def test_one_process_per_folder(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s")
    first.open()
    with pytest.raises(ConfigError, match="in use by another process"):
        Spool(tmp_path / "s").open()
    first.close()
    second = Spool(tmp_path / "s")
    second.open()
    second.close()


def test_refused_records_are_kept_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.open()
    spool.reject({"op": "reply", "message_id": 1}, "IntegrityError(...)")
    spool.close()
    [line] = (tmp_path / "s" / REJECTED).read_text(encoding="utf-8").splitlines()
    assert json.loads(line) == {"reason": "IntegrityError(...)", "record": {"op": "reply", "message_id": 1}}


def test_refused_records_keep_no_message_text(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    spool.open()
    record = {"op": "edit", "message_id": 7, "content": "my secret opinion", "edited_at": "2026-01-01T00:00:00"}
    spool.reject(record, "DBAPIError: refused\n[parameters: ('my secret opinion',)]")
    spool.close()
    text = (tmp_path / "s" / REJECTED).read_text(encoding="utf-8")
    assert "secret" not in text
    assert json.loads(text) == {
        "reason": "DBAPIError: refused",
        "record": {"op": "edit", "message_id": 7, "edited_at": "2026-01-01T00:00:00", "content_chars": 17},
    }
