"""End to end: replies written to break things (NUL, escape sequences, zero-width characters, spreadsheet
formulas) go through the real discord.py client and the loopback server into the database on both backends, are
classified like their plain twins, and come out of ``/stance export`` as CSV a spreadsheet will not run."""

from __future__ import annotations

import csv
import io

from sqlalchemy import select

from bot.storage.models import Reply
from tests.e2e.conftest import FAIR, UNFAIR, World, post_prompt, repo_of, slash

HOSTILE = {
    "maya": '=HYPERLINK("http://evil.example","x") ' + UNFAIR + "\x00",
    "kenji": "+" + FAIR.replace("Unfair", "Un\u200bfair"),
    "lucas": "-1, \x1b[2J" + UNFAIR,
    "priya": "@SUM(1+1) " + FAIR,
    "tom_h": "\t" + UNFAIR,
    "nora": "\r" + FAIR,
}


async def test_hostile_replies_are_stored_classified_and_exported_as_text(world: World) -> None:
    thread_id = await post_prompt(world)
    plain = {name: await world.reply(thread_id, f"{name}_twin", _plain(text)) for name, text in HOSTILE.items()}
    for name, text in HOSTILE.items():
        outcome = await world.reply(thread_id, name, text)
        twin = plain[name]
        assert (outcome.result.label, round(outcome.result.confidence, 4)) == (
            twin.result.label,
            round(twin.result.confidence, 4),
        ), name
    async with repo_of(world).sessions() as session:
        stored = list(await session.scalars(select(Reply.content)))
    assert len(stored) == 2 * len(HOSTILE)
    assert any(text.startswith("=HYPERLINK") and UNFAIR in text for text in stored)  # NUL or not, it is kept

    result = await slash(world, world.moderator, "stance", "export", prompt="alliance", format="csv")
    assert result.ephemeral
    upload = next(r for r in reversed(world.server.requests) if r.files)
    [(_name, data)] = upload.files
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    texts = [row["text"] for row in rows]
    assert len(texts) == 2 * len(HOSTILE)
    assert not [t for t in texts if t[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert sorted(texts) == sorted("'" + t if t[:1] in "=+-@\t\r" else t for t in stored)
    assert sum(t.startswith("'") for t in texts) == len(HOSTILE) + 4  # the twins of the first four too
    assert all(row["confidence"] and float(row["confidence"]) >= 0 for row in rows)  # numbers stay numbers


def _plain(text: str) -> str:
    """The same reply as a reader sees it: without control and zero-width characters."""
    for junk in ("\x00", "\x1b", "\u200b", "\t", "\r"):
        text = text.replace(junk, "")
    return text
