"""Property-based fuzzing of the command line: arbitrary JSON as an export for ``analyze``, arbitrary TOML as the
config file, arbitrary argument lists for the commands. Whatever comes in: exit status 0, or 2 with one
``stancebot:`` line; never a traceback; never a partial output file."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bot.cli.analyze import OUTPUTS
from bot.config import Settings, load_settings
from bot.core.errors import ConfigError
from bot.storage.db import sqlite_url
from tests.cli.helpers import invoke

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stancebot-fuzz-") as tmp:
        yield Path(tmp)


def assert_clean_exit(result: Any) -> None:
    """Status 0, or 2 with exactly one ``stancebot:`` line; no traceback (click's runner records any exception)."""
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr + result.stdout
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.startswith("stancebot:")]
        assert len(lines) == 1, result.stderr


def no_partial_files(root: Path) -> None:
    assert not [p for p in root.rglob("*") if p.name.endswith(".part")], sorted(root.rglob("*"))


# -- arbitrary JSON as an export ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


#: Message times the fuzzer draws (naive, as hypothesis wants its bounds; given a zone when drawn).
EARLY, LATE = datetime(2010, 1, 1), datetime(2300, 1, 1)  # noqa: DTZ001
ids = st.integers(0, 2**63 - 1).map(str) | st.integers(0, 2**63 - 1)
authors = st.fixed_dictionaries(
    {"id": ids}, optional={"name": st.text(max_size=10), "nickname": st.none(), "isBot": st.booleans()}
)
messages = st.fixed_dictionaries(
    {
        "id": ids,
        "timestamp": st.datetimes(min_value=EARLY, max_value=LATE, timezones=st.just(UTC)).map(datetime.isoformat),
        "content": st.text(max_size=60) | st.none(),
        "author": authors,
    },
    optional={"type": st.sampled_from(["Default", "Reply", "GuildMemberJoin", "ChannelPinnedMessage"])},
)
well_formed = st.fixed_dictionaries(
    {
        "guild": st.fixed_dictionaries({"id": ids, "name": st.text(max_size=10)}),
        "channel": st.fixed_dictionaries({"id": ids, "name": st.text(max_size=10)}),
        "messages": st.lists(messages, min_size=1, max_size=4),
    }
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON document a value could be replaced."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


@st.composite
def exports(draw: st.DrawFn) -> Any:
    """Anything at all; a well-formed export; or a well-formed export with one value replaced by anything."""
    kind = draw(st.sampled_from(["anything", "well-formed", "one value off"]))
    if kind == "anything":
        return draw(anything)
    doc = draw(well_formed)
    if kind == "one value off":
        *parent, key = draw(st.sampled_from(list(_paths(doc))))
        node = doc
        for step in parent:
            node = node[step]
        node[key] = draw(anything)
    return doc


VALID = {
    "guild": {"id": "1", "name": "g"},
    "channel": {"id": "2", "name": "c"},
    "messages": [
        {"id": "3", "timestamp": "2026-01-05T09:00:00Z", "content": "Japan should pay", "author": {"id": "4"}}
    ],
}


@FUZZ
@example(data=VALID)
@given(data=exports())
def test_any_json_as_an_export(data: Any) -> None:
    with folder() as root:
        export = root / "export.json"
        export.write_text(json.dumps(data), encoding="utf-8")
        out = root / "out"
        result = invoke("analyze", str(export), "--prompt", "alliance", "--out", str(out))
        assert_clean_exit(result)
        no_partial_files(root)
        made = {p.name for p in out.iterdir()} if out.exists() else set()
        assert made == (set(OUTPUTS) if result.exit_code == 0 else set()), (made, result.stderr)
        event(f"exit {result.exit_code}")


# -- arbitrary TOML as the config file ----------------------------------------------------------------------------

SECTIONS = list(Settings.model_fields)
KEYS = sorted({key for name in SECTIONS for key in Settings.model_fields[name].annotation.model_fields})  # type: ignore[union-attr]
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["UTC", "Europe/Berlin", "DEBUG", "json", "onnx", "sqlite+aiosqlite:///x.db", "member"])
)
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


documents = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=8),
    st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), toml_values, max_size=4) | toml_values,
    max_size=5,
)


def render(doc: dict[str, Any]) -> str:
    plain = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    tables = [
        f"[{json.dumps(k)}]\n" + "".join(f"{json.dumps(kk)} = {toml_value(vv)}\n" for kk, vv in v.items())
        for k, v in doc.items()
        if isinstance(v, dict)
    ]
    return "\n".join(plain) + "\n" + "\n".join(tables)


@FUZZ
@given(doc=documents | st.text(max_size=200).map(lambda t: {"__raw__": t}))
def test_any_toml_as_the_config(doc: dict[str, Any]) -> None:
    with folder() as root:
        cfg = root / "config.toml"
        text = doc["__raw__"] if set(doc) == {"__raw__"} else render(doc)
        cfg.write_text(text, encoding="utf-8")
        try:
            load_settings(cfg, environ={})
            event("valid settings")
        except ConfigError:
            event("ConfigError")
        # Through a command that reads the settings and then fails harmlessly (no database there).
        result = invoke("export", "--corrections", "--config", str(cfg), "--database", sqlite_url(root / "none.db"))
        assert_clean_exit(result)
        assert result.exit_code == 2
        assert not (root / "none.db").exists()


# -- arbitrary argument lists -------------------------------------------------------------------------------------

WORDS = [
    "--prompt", "alliance", "nope", "--guild", "1", "-1", "99999999999999999999999", "--format", "csv", "json", "xml",
    "--out", "out.csv", "out/", "--database", "sqlite+aiosqlite:///db.sqlite", "mysql://a/b", "not a url",
    "--config", "config.toml", "--corrections", "--help", "--yes", "base", "head", "0001", "0099", "-1",
    "--period", "weekly", "--timezone", "Mars/Olympus", "--history", "0", "--batch-size", "--count-mode", "reply",
    "\x00", "é", "",
]  # fmt: skip
argv = st.lists(st.sampled_from(WORDS) | st.text(max_size=12), max_size=8)
COMMANDS = [["export"], ["db", "upgrade"], ["db", "downgrade"], ["analyze"], ["models", "verify"], ["run"], ["nope"]]


@FUZZ
@given(command=st.sampled_from(COMMANDS), args=argv)
def test_any_arguments(command: list[str], args: list[str]) -> None:
    with folder() as root:
        (root / "config.toml").write_text("[general]\n", encoding="utf-8")
        (root / "export.json").write_text('{"messages": []}', encoding="utf-8")
        args = [a.replace("config.toml", str(root / "config.toml")).replace("out", str(root / "out")) for a in args]
        args = [a.replace("sqlite+aiosqlite:///", f"sqlite+aiosqlite:///{root}/") for a in args]
        if command == ["analyze"]:
            args = [str(root / "export.json"), *args]
        result = invoke(*command, *args, env={"DISCORD_TOKEN": ""})
        assert_clean_exit(result)
        event(f"exit {result.exit_code}")
        no_partial_files(root)
