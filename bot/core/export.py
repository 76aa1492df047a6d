"""Exports as plain text: a prompt's replies and stances (CSV or JSON), corrections as training data (JSONL),
and what is stored about one member. No storage, no Discord."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Literal

from bot.core.errors import StancebotError

ExportFormat = Literal["csv", "json"]
FORMATS: tuple[ExportFormat, ...] = ("csv", "json")


class ExportError(StancebotError):
    """An export cannot be produced as asked (unknown format, too large to send)."""


@dataclass(frozen=True)
class ExportRow:
    """One live reply of a prompt with its current stance and whether the tally counts it."""

    prompt: str
    guild_id: int
    message_id: int
    author_id: int
    written_at: datetime
    edited_at: datetime | None
    text: str | None
    label: str | None
    confidence: float | None
    source: str | None
    model_version: str | None
    counted: bool
    #: The reply's language as the model path saw it (``en``, ``ja``...) and the encoder that read it.
    language: str | None = None
    encoder: str | None = None


@dataclass(frozen=True)
class Correction:
    """A reply whose stance a moderator set: one training example for ``stancebot train``."""

    text: str
    label: str
    prompt: str

    def to_json(self) -> dict[str, str]:
        """The training-data line (the same keys as ``models/data/*.jsonl``)."""
        return {"text": self.text, "label": self.label, "prompt": self.prompt, "source": "moderator"}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


#: How a cell a spreadsheet would run as a formula starts (OWASP's CSV-injection rule), with the full-width
#: forms some spreadsheets also accept.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a text cell that starts like a formula gets a leading ``'``.

    Only text is changed (what members and moderators wrote, names, labels); numbers, negative ones included,
    stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """A :func:`csv.writer` whose every cell goes through :func:`spreadsheet_safe`: what every CSV export uses.

    Rows end in CRLF (RFC 4180): the writer quotes only cells holding a character of the line ending, so with a
    bare ``\\n`` a carriage return inside a reply would split its row.
    """

    def __init__(self, handle: Any) -> None:
        self._writer = csv.writer(handle, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        """Write one row."""
        self._writer.writerow([spreadsheet_safe(cell) for cell in row])


def rows_to_csv(rows: Iterable[ExportRow]) -> str:
    """CSV with a header row; ids as text so spreadsheets keep all their digits; cells that would run as
    formulas neutralised."""
    out = io.StringIO()
    names = [f.name for f in fields(ExportRow)]
    writer = SafeCsvWriter(out)
    writer.writerow(names)
    for row in rows:
        values = [_plain(getattr(row, name)) for name in names]
        writer.writerow(["" if v is None else v for v in values])
    return out.getvalue()


def rows_to_json(rows: Iterable[ExportRow]) -> str:
    """A JSON array of objects; ids as strings (JavaScript numbers cannot hold Discord ids)."""
    items = []
    for row in rows:
        data = {k: _plain(v) for k, v in asdict(row).items()}
        for key in ("guild_id", "message_id", "author_id"):
            data[key] = str(data[key])
        items.append(data)
    return json.dumps(items, ensure_ascii=False, indent=1)


def render_rows(rows: Sequence[ExportRow], fmt: str) -> str:
    """``rows`` as CSV or JSON; raises :class:`ExportError` for another format."""
    if fmt == "csv":
        return rows_to_csv(rows)
    if fmt == "json":
        return rows_to_json(rows)
    raise ExportError(f"Unknown export format {fmt!r}; use csv or json.")


def corrections_to_jsonl(corrections: Iterable[Correction]) -> str:
    """One JSON object per line: ``{text, label, prompt, source: "moderator"}``."""
    return "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in corrections)


def member_data_to_json(data: Mapping[str, Any]) -> str:
    """What is stored about a member, as indented JSON (datetimes in ISO-8601, ids as strings)."""

    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(f"cannot export {type(value).__name__}")

    return json.dumps(data, ensure_ascii=False, indent=1, default=default)


def check_size(payload: bytes, limit: int, *, what: str) -> bytes:
    """``payload`` if it fits an upload of ``limit`` bytes; else an :class:`ExportError` saying what to do."""
    if len(payload) > limit:
        mib = len(payload) / 1024 / 1024
        raise ExportError(
            f"The {what} is {mib:.1f} MiB, more than Discord lets me upload here; "
            "run `stancebot export` on the server instead."
        )
    return payload
