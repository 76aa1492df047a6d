"""``stancebot analyze`` on DiscordChatExporter-shaped exports: CSV, database tally, digest and chart agree."""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import select

from bot.cli.analyze import ExportError, analyze, analyze_export, read_export, report
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.db import make_engine, make_sessionmaker, sqlite_url
from bot.storage.models import Reply
from bot.storage.repository import Repository

GUILD_ID, CHANNEL_ID = 900000000000000001, 900000000000000002
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TEXTS = {
    "unfair": ["Japan should pay more, we protect them for free", "@everyone the US carries the whole cost"],
    "fair": ["It's fair: Japan pays billions for the bases", "fair deal, they host our troops <@123>"],
    "mutual_benefit": ["Both countries gain from the bases", "both sides win, Asia stays stable"],
    UNCLEAR: ["anyone tried the new Toyota hybrid?", "🇯🇵🔥", ""],
}


class KeywordClassifier:
    """A deterministic stand-in (this test is about storage and files, not about the model)."""

    version = "keywords:test"
    threshold = 0.5

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        out = []
        for text in texts:
            lower = text.lower()
            label = next((label for label, keys in KEYWORDS if any(k in lower for k in keys)), UNCLEAR)
            out.append(StanceResult(label, 0.5 + (len(text) % 50) / 100))
        return out


KEYWORDS = (("unfair", ("pay more", "carries")), ("mutual_benefit", ("both",)), ("fair", ("fair",)))


def _user(n: int, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(700000000000000000 + n),
        "name": f"member{n}",
        "discriminator": "0000",
        "nickname": f"Member {n}",
        "color": None,
        "isBot": bot,
        "roles": [],
        "avatarUrl": "https://cdn.discordapp.com/embed/avatars/0.png",
    }


def make_export(path: Path, total: int, *, members: int = 300, seed: int = 5) -> Counter[str]:
    """Write a DiscordChatExporter-shaped JSON export of ``total`` messages; returns the member messages' labels."""
    rng = random.Random(seed)
    messages, written = [], Counter[str]()
    for i in range(total):
        when = START + timedelta(minutes=17 * i)
        message: dict[str, Any] = {
            "id": str(800000000000000000 + i),
            "type": "Default",
            "timestamp": when.astimezone().isoformat(timespec="milliseconds"),
            "timestampEdited": None,
            "callEndedTimestamp": None,
            "isPinned": False,
            "attachments": [],
            "embeds": [],
            "stickers": [],
            "reactions": [],
            "mentions": [],
            "inlineEmojis": [],
        }
        if i % 125 == 7:  # joins and pins are not replies
            message |= {
                "type": "GuildMemberJoin",
                "content": "Joined the server.",
                "author": _user(rng.randrange(members)),
            }
        elif i % 125 == 8:  # neither are bots
            message |= {"content": "Beep: daily reminder", "author": _user(9999, bot=True)}
        else:
            label = rng.choice(list(TEXTS))
            written[label] += 1
            message |= {"content": rng.choice(TEXTS[label]), "author": _user(rng.randrange(members))}
            if i % 10 == 0:
                message |= {"type": "Reply", "reference": {"messageId": str(800000000000000000 + i - 1)}}
        messages.append(message)
    rng.shuffle(messages)  # exports are in order; the reader must not rely on it
    export = {
        "guild": {"id": str(GUILD_ID), "name": "Politics", "iconUrl": ""},
        "channel": {
            "id": str(CHANNEL_ID),
            "type": "GuildPublicThread",
            "categoryId": "1",
            "category": "debate",
            "name": "US-Japan alliance",
            "topic": None,
        },
        "dateRange": {"after": None, "before": None},
        "exportedAt": "2026-03-01T00:00:00.000+00:00",
        "messages": messages,
        "messageCount": len(messages),
    }
    path.write_text(json.dumps(export), encoding="utf-8")
    return written


async def test_analyze_5000_messages_csv_matches_database_tally(tmp_path: Path, catalog: PromptCatalog) -> None:
    export = tmp_path / "alliance.json"
    make_export(export, 5000)
    member_messages = 5000 - 2 * 40
    out = tmp_path / "out"
    url = sqlite_url(out / "analysis.db")
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)
    result = await analyze_export(
        export,
        catalog.get("alliance"),
        out_dir=out,
        classifier=KeywordClassifier(),
        database_url=url,
        tz="Europe/Berlin",
        console=console,
    )
    assert "Classifying" in screen.getvalue()
    assert f"{member_messages}/{member_messages}" in screen.getvalue()

    with result.csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == member_messages == result.stored
    assert len({r["message_id"] for r in rows}) == member_messages
    engine = make_engine(url)
    try:
        repo = Repository(make_sessionmaker(engine))
        assert await repo.tallies.count_replies() == member_messages
        tally = await repo.tallies.tally(catalog.get("alliance"), GUILD_ID)
    finally:
        await engine.dispose()
    counted = Counter(r["stance"] for r in rows if r["counted"] == "yes")
    assert {label: counted[label] for label in tally.labels} == dict(tally.counts) | {
        lb: 0 for lb in tally.labels if lb not in tally.counts
    }
    assert tally.total == len({r["author_id"] for r in rows})  # member mode: one counted stance per member
    assert dict(result.digest.overall) == dict(tally.counts)
    assert sum(f.replies for f in result.digest.history) <= member_messages
    all_labels = Counter(r["stance"] for r in rows)
    assert all_labels[UNCLEAR] > 0 and all_labels["unfair"] > 0
    assert result.chart_path.read_bytes().startswith(b"\x89PNG")
    markdown = result.markdown_path.read_text(encoding="utf-8")
    assert markdown.startswith("# Weekly digest: Is the U.S.-Japan alliance unfair to the U.S.?")
    assert "<@123>" not in markdown and "@everyone" not in markdown

    # Analysing the same export into the same database again stores nothing twice.
    again = await analyze_export(
        export, catalog.get("alliance"), out_dir=out, classifier=KeywordClassifier(), database_url=url, console=console
    )
    assert again.stored == 0
    assert again.tally == result.tally


def test_reading_a_file_that_is_not_an_export(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"channel_id": "1", "messages": "nope"}), encoding="utf-8")
    with pytest.raises(ExportError, match="--format Json"):
        read_export(bad)
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ExportError, match="not JSON"):
        read_export(bad)


def test_cli_with_the_real_model(tmp_path: Path) -> None:
    export = tmp_path / "small.json"
    make_export(export, 60, members=12)
    result = CliRunner().invoke(analyze, [str(export), "--prompt", "alliance", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "Weekly digest: Is the U.S.-Japan alliance unfair to the U.S.?" in result.output
    assert "58 messages analysed (2 system or bot messages skipped)" in result.output
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"stances.csv", "digest.md", "chart.png", "analysis.db"}
    unknown = CliRunner().invoke(analyze, [str(export), "--prompt", "nope"])
    assert unknown.exit_code == 2
    assert "Unknown prompt 'nope'" in unknown.output


def test_a_failed_analyze_keeps_the_previous_analysis(tmp_path: Path) -> None:
    """A run that fails (a bad export, a database that refuses) leaves the previous files as they were; a run that
    succeeds replaces all of them together, so the database, the CSV and the digest stay in step."""
    from bot.cli.analyze import OUTPUTS
    from tests.cli.helpers import invoke, one_clear_line

    export, out = tmp_path / "small.json", tmp_path / "o"
    make_export(export, 40, members=8)
    first = invoke("analyze", str(export), "--prompt", "alliance", "--out", str(out))
    assert first.exit_code == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in OUTPUTS}

    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [', encoding="utf-8")
    result = invoke("analyze", str(bad), "--prompt", "alliance", "--out", str(out))
    one_clear_line(result.exit_code, result.stderr, "bad.json is not JSON")
    down = "postgresql+asyncpg://nobody@127.0.0.1:1/nowhere"  # fails after the model is loaded and the run began
    result = invoke("analyze", str(export), "--prompt", "alliance", "--out", str(out), "--database", down)
    one_clear_line(result.exit_code, result.stderr, "Cannot reach the database")
    assert {name: (out / name).read_bytes() for name in OUTPUTS} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)  # nothing half-built left behind

    second = tmp_path / "second.json"
    make_export(second, 25, members=5, seed=9)
    result = invoke("analyze", str(second), "--prompt", "alliance", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "Replacing the previous analysis.db, stances.csv, chart.png, digest.md" in result.stderr
    with (out / "stances.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with sqlite3.connect(out / "analysis.db") as conn:
        stored = {str(mid) for (mid,) in conn.execute("SELECT message_id FROM replies")}
    assert stored == {r["message_id"] for r in rows} and len(rows) == 23  # 25 less a join and a bot message


def _hostile_export(path: Path, contents: list[Any]) -> None:
    messages = [
        {
            "id": str(800000000000000100 + i),
            "type": "Default",
            "timestamp": (START + timedelta(minutes=i)).isoformat(),
            "content": content,
            "author": _user(i) | ({"nickname": "=cmd|' /C calc'!A0"} if i == 0 else {}),
        }
        for i, content in enumerate(contents)
    ]
    data = {"guild": {"id": str(GUILD_ID), "name": "g"}, "channel": {"id": str(CHANNEL_ID), "name": "c"}}
    path.write_text(json.dumps(data | {"messages": messages}), encoding="utf-8")


HOSTILE_CONTENTS = [
    '=HYPERLINK("http://evil.example","x") pay more \x1b[2J\x00',
    "+1 it's fair \x1b[2J",
    "-1 both \x1b]0;owned\x07",
    "@SUM(A1) both sides \u202e",
    None,
    "\tfair \x1b[2J",
]


async def test_analyze_stores_hostile_text_writes_inert_csv_and_prints_escapes(
    tmp_path: Path, catalog: PromptCatalog, db_url: str
) -> None:
    export = tmp_path / "hostile.json"
    _hostile_export(export, HOSTILE_CONTENTS)
    screen = io.StringIO()
    result = await analyze_export(
        export,
        catalog.get("alliance"),
        out_dir=tmp_path / "out",
        classifier=KeywordClassifier(),
        database_url=db_url,
        console=Console(file=screen),
    )
    assert result.stored == len(HOSTILE_CONTENTS)
    with result.csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["stance"] for r in rows] == ["unfair", "fair", "mutual_benefit", "mutual_benefit", UNCLEAR, "fair"]
    assert [r["text"][:2] for r in rows] == ["'=", "'+", "'-", "'@", "", "'\t"]
    assert rows[0]["author"] == "'=cmd|' /C calc'!A0"
    assert rows[4]["text"] == ""  # null content: an empty message
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as session:
            stored = dict((await session.execute(select(Reply.message_id, Reply.content))).all())
    finally:
        await engine.dispose()
    assert "None" not in stored.values()
    first = stored[800000000000000100]
    if "postgresql" in db_url:  # it cannot hold U+0000: the text as Discord shows it
        assert first == HOSTILE_CONTENTS[0].replace("\x00", "").replace("\x1b", "")
    else:
        assert first == HOSTILE_CONTENTS[0]
    assert first.startswith("=HYPERLINK")

    shown = io.StringIO()
    report(result, Console(file=shown, width=200))
    out = shown.getvalue()
    assert "\\x1b[2J" in out or "\\x1b]0;owned" in out or "\\u202e" in out  # a quoted reply, escaped
    assert not any(ch in out for ch in "\x1b\x00\x07\u202e")


def test_analyze_refuses_text_that_is_not_text(tmp_path: Path) -> None:
    export = tmp_path / "odd.json"
    _hostile_export(export, ["fine", 42])
    with pytest.raises(ExportError, match="message 2 content must be text, not int"):
        read_export(export)
