"""``stancebot sandbox`` with replies written to attack the terminal: printed as escapes, never raw; a reply line
whose text is not text is named, never played as the word ``None``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from bot.config import load_settings
from bot.core.errors import ConfigError
from bot.sandbox.runner import load_replies, run_sandbox

HOSTILE = [
    "Japan should pay way more\x1b[2J\x1b]0;owned\x07, we protect them for free\x00",
    "Japan already pays billions for the bases, it's \u202efair\rOK unfair 1.00",
]


async def test_the_sandbox_prints_control_characters_as_escapes(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    lines = [{"prompt": "alliance", "author": f"m{i}\x1b[31m", "text": text} for i, text in enumerate(HOSTILE)]
    replies.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    screen = io.StringIO()
    await run_sandbox(load_settings(None, environ={}), replies=replies, console=Console(file=screen, width=200))
    out = screen.getvalue()
    assert "we protect them for free\\x00" in out and "\\x1b[2J\\x1b]0;owned\\x07" in out
    assert "\\u202efair\\rOK" in out and "m0\\x1b[31m" in out
    assert not any(ch in out for ch in "\x1b\x00\x07\u202e\r")
    assert out.count("→ unfair") + out.count("→ fair") + out.count("→ unclear") == len(HOSTILE)


def test_a_reply_whose_text_is_not_text_is_named(tmp_path: Path) -> None:
    replies = tmp_path / "replies.jsonl"
    replies.write_text('{"prompt": "alliance", "text": "fine"}\n{"prompt": "alliance", "text": null}\n', "utf-8")
    with pytest.raises(ConfigError, match=r"replies\.jsonl line 2"):
        load_replies(replies)
    replies.write_text('{"prompt": "alliance", "author": null, "text": "fine"}\n', "utf-8")
    assert [(r.author, r.text) for r in load_replies(replies)] == [("member", "fine")]
