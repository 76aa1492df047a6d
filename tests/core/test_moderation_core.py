"""Moderation domain rules without Discord: counting one member, message links, review decisions, the form that
adds prompts, and exports."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.counting import Comparison, CountingRules, LiveStance, count_member, render_comparison
from bot.core.errors import PromptError
from bot.core.export import (
    Correction,
    ExportError,
    ExportRow,
    check_size,
    corrections_to_jsonl,
    member_data_to_json,
    render_rows,
)
from bot.core.moderation import MessageLinkError, MessageRef, needs_review, parse_message_link, runner_up
from bot.core.prompt_form import parse_label_lines, prompt_from_form
from bot.core.stance import StanceResult

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _s(sid: int, label: str, minutes: int) -> LiveStance:
    return LiveStance(sid, label, T0 + timedelta(minutes=minutes), sid)


STANCES = [_s(1, "unfair", 0), _s(2, "fair", 5), _s(3, "unclear", 9)]


@pytest.mark.parametrize(
    ("rules", "declared", "opted_out", "ids", "declared_counts"),
    [
        (CountingRules(), None, False, (2,), False),  # the latest reply with a stance, not the later unclear one
        (CountingRules("reply"), None, False, (3, 2, 1), False),
        (CountingRules(), "unfair", False, (), True),
        (CountingRules("member", False), "unfair", False, (2,), False),
        (CountingRules(), "unfair", True, (), False),
    ],
)
def test_count_member(
    rules: CountingRules, declared: str | None, opted_out: bool, ids: tuple[int, ...], declared_counts: bool
) -> None:
    result = count_member(STANCES, rules=rules, declared=declared, opted_out=opted_out)
    assert result.stance_ids == ids
    assert result.declared_counts == declared_counts
    assert result.model_label == "fair"


def test_count_member_edge_cases() -> None:
    assert count_member([], rules=CountingRules()).stance_ids == ()
    only_unclear = count_member([_s(1, "unclear", 0), _s(2, "unclear", 1)], rules=CountingRules())
    assert only_unclear.stance_ids == (2,) and only_unclear.model_label == "unclear"
    same_time = count_member([_s(5, "fair", 0), _s(4, "unfair", 0)], rules=CountingRules())
    assert same_time.stance_ids == (5,)  # ties go to the later message id


def test_comparison_table() -> None:
    comparison = Comparison(("fair", "unfair", "unclear"), {"fair": 2}, {"fair": 1, "unfair": 1}, 2, 1)
    assert comparison.agreement == 0.5
    table = render_comparison(comparison)
    assert "fair         2         1" in table and table.endswith("agree: 50% of 2")
    assert Comparison(("fair",), {}, {}, 0, 0).agreement is None


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("https://discord.com/channels/1/2/3", MessageRef(3, 2, 1)),
        ("https://ptb.discord.com/channels/1/2/3/", MessageRef(3, 2, 1)),
        ("<https://discordapp.com/channels/@me/2/3>", MessageRef(3, 2, None)),
        (" 123456789012345678 ", MessageRef(123456789012345678)),
    ],
)
def test_parse_message_link(text: str, ref: MessageRef) -> None:
    assert parse_message_link(text) == ref


@pytest.mark.parametrize("text", ["", "hello", "https://example.com/channels/1/2/3", "12"])
def test_parse_message_link_refuses(text: str) -> None:
    with pytest.raises(MessageLinkError, match="Copy Message Link"):
        parse_message_link(text)


def test_needs_review() -> None:
    assert needs_review(StanceResult("fair", 0.55), below=0.6)
    assert not needs_review(StanceResult("fair", 0.65), below=0.6)
    assert needs_review(StanceResult("unclear", 0.3, "low confidence (fair 0.30)"), below=0.0)
    assert not needs_review(StanceResult("unclear", 1.0, "empty reply"), below=0.99)
    assert runner_up(StanceResult("unclear", 0.3, "low confidence (mutual_benefit 0.30)")) == "mutual_benefit"
    assert runner_up(StanceResult("fair", 0.5)) == "fair"


LABELS = "raise: Tariffs should go up | protect jobs; higher now\ncut: Tariffs should go down"


def test_prompt_from_form() -> None:
    prompt = prompt_from_form(
        name=" Tariffs ", title="Tariffs", question="Up or down?", context="Context.", labels=LABELS
    )
    assert prompt.id == "tariffs"
    assert prompt.label_names == ("raise", "cut", "unclear")
    assert prompt.label("raise").examples == ("protect jobs", "higher now")
    assert prompt.label("cut").examples == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": ": nameless\ncut: down"}, "line 1: the label name before `:` is empty"),
        ({"labels": "raise up\ncut: down"}, "line 1 has no `:`"),
        ({"labels": "\n \n"}, "Labels: none given"),
        ({"labels": "raise:\ncut: down"}, "label 'raise': 'description' is empty"),
        ({"labels": "\n".join(f"l{i}x: label {i}" for i in range(11))}, "has 12 labels (unclear included)"),
        ({"labels": "raise: up\nraise: again"}, "duplicate label names: raise"),
        ({"labels": "Raise: up\ncut: down"}, "label name 'Raise' must be 2-32 characters"),
        ({"question": "x" * 5000}, "'question' is 5000 characters; the limit is 300"),
        ({"title": "  "}, "'title' is empty"),
        ({"name": "no spaces"}, "id 'no spaces' must be"),
    ],
)
def test_prompt_from_form_says_what_is_wrong(changes: dict[str, str], message: str) -> None:
    values = {"name": "tariffs", "title": "T", "question": "Q?", "context": "C.", "labels": LABELS} | changes
    with pytest.raises(PromptError) as info:
        prompt_from_form(**values)
    assert message in str(info.value)


def test_parse_label_lines_names_every_bad_line() -> None:
    with pytest.raises(PromptError) as info:
        parse_label_lines("a b\n: x\nok: fine")
    assert "line 1 has no `:`" in str(info.value) and "line 2: the label name" in str(info.value)


ROW = ExportRow("alliance", 1, 2**62, 3, T0, None, 'He said "no", then, yes', "fair", 0.5, "model", "m", True)


def test_exports() -> None:
    parsed = list(csv.DictReader(io.StringIO(render_rows([ROW], "csv"))))
    assert parsed[0]["text"] == 'He said "no", then, yes' and parsed[0]["message_id"] == str(2**62)
    assert parsed[0]["edited_at"] == "" and parsed[0]["counted"] == "True"
    [item] = json.loads(render_rows([ROW], "json"))
    assert item["message_id"] == str(2**62) and item["written_at"] == T0.isoformat()
    with pytest.raises(ExportError, match="use csv or json"):
        render_rows([ROW], "xml")
    line = corrections_to_jsonl([Correction("t", "fair", "alliance")])
    assert json.loads(line) == {"text": "t", "label": "fair", "prompt": "alliance", "source": "moderator"}
    assert json.loads(member_data_to_json({"at": T0}))["at"] == T0.isoformat()
    assert check_size(b"abc", 3, what="x") == b"abc"
    with pytest.raises(ExportError, match="stancebot export"):
        check_size(b"abcd", 3, what="export")
