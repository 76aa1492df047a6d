"""CSV exports a spreadsheet opens as text: OWASP's CSV-injection rule in one function used by every export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from bot.core.export import ExportRow, rows_to_csv, spreadsheet_safe


def test_cells_that_would_run_as_formulas_get_a_leading_quote() -> None:
    for text in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "＝1+1", "－1"]:
        assert spreadsheet_safe(text) == "'" + text
    for text in ["fair", "1-1", " =x", "", "'=x"]:
        assert spreadsheet_safe(text) == text
    assert spreadsheet_safe(-5) == -5 and spreadsheet_safe(-0.25) == -0.25  # numbers stay numbers
    assert spreadsheet_safe(None) is None


def test_rows_to_csv_keeps_one_row_per_reply_whatever_its_text() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    texts = ['=HYPERLINK("http://x")', "line\rbreak", "two\nlines", 'quote " and, comma', "-3"]
    rows = [
        ExportRow("p", 1, i, 2, at, None, text, "fair", -0.0 if i else 0.5, "model", "m", True)
        for i, text in enumerate(texts)
    ]
    parsed = list(csv.DictReader(io.StringIO(rows_to_csv(rows), newline="")))
    assert [r["text"] for r in parsed] == [
        '\'=HYPERLINK("http://x")',
        "line\rbreak",
        "two\nlines",
        'quote " and, comma',
        "'-3",
    ]
    assert parsed[1]["confidence"] == "-0.0"
