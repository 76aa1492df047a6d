"""Check the sandbox's REST answers against Discord's documented response shapes.

The shapes come from ``discord_v10_subset.json`` (see ``extract.py``): for each answer the checker finds the documented
route, requires its status to be documented (``4XX`` covers 400-499), validates the body against the documented
JSON schema (required fields, types, enums, ``null`` only where allowed) and, beyond the schema, refuses properties
the documentation does not name, so a gateway-only field in a REST answer is caught too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from bot.sandbox._http import RecordedRequest

SUBSET = Path(__file__).with_name("discord_v10_subset.json")


@dataclass(frozen=True)
class Violation:
    """One way an answer differs from the documentation."""

    method: str
    path: str
    status: int
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}: at {self.where or '<body>'}: {self.problem}"


@cache
def _subset() -> dict[str, Any]:
    return json.loads(SUBSET.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def _patterns() -> list[tuple[re.Pattern[str], str]]:
    """Path templates as regexes, literal segments first (``@original`` before ``{message_id}``)."""
    templates = sorted(_subset()["paths"], key=lambda p: (p.count("{"), p))
    return [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$"), t) for t in templates]


def documented_route(method: str, path: str) -> dict[str, Any] | None:
    """The documented responses of ``method path`` by status, or ``None`` if the route is not in the subset."""
    for pattern, template in _patterns():
        if pattern.match(path):
            return _subset()["paths"][template].get(method.lower())  # type: ignore[no-any-return]
    return None


def _allof_members(node: Any) -> Iterator[str]:
    """Names of component schemas used as ``allOf`` members (their siblings add properties, so they stay open)."""
    if isinstance(node, dict):
        for member in node.get("allOf", []):
            if isinstance(member, dict) and "$ref" in member:
                yield str(member["$ref"]).rsplit("/", 1)[-1]
        for value in node.values():
            yield from _allof_members(value)
    elif isinstance(node, list):
        for value in node:
            yield from _allof_members(value)


def _closed(schema: Any, *, open_top: bool = False) -> Any:
    """The schema with ``unevaluatedProperties: false`` on every object with declared properties (or ``allOf``),
    except at the top of an ``allOf`` member, whose siblings declare the rest."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {
        key: [_closed(m, open_top=True) for m in value] if key == "allOf" else _closed(value)
        for key, value in schema.items()
    }
    declares = "properties" in schema or "allOf" in schema
    if declares and not open_top and "unevaluatedProperties" not in schema and "additionalProperties" not in schema:
        closed["unevaluatedProperties"] = False
    return closed


#: Where the description contradicts Discord's own documentation, the documentation wins (each entry says why).
ERRATA: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "InnerErrors": (
        ("properties", "_errors", "items"),
        {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        },
        "Discord answers a field error with a string code such as BASE_TYPE_MAX_LENGTH (discord-api-docs#2519); "
        "the description reuses the top-level Error, whose code is an integer",
    ),
}


def _with_errata(schemas: dict[str, Any]) -> dict[str, Any]:
    fixed = json.loads(json.dumps(schemas))
    for name, (path, replacement, _why) in ERRATA.items():
        node = fixed[name]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = replacement
    return fixed  # type: ignore[no-any-return]


@cache
def _components() -> dict[str, Any]:
    schemas = _with_errata(_subset()["components"]["schemas"])
    members = set(_allof_members(_subset()))
    return {"schemas": {name: _closed(s, open_top=name in members) for name, s in schemas.items()}}


@cache
def _validator(template_key: str, status: str) -> Draft202012Validator:
    method, _, template = template_key.partition(" ")
    schema = _subset()["paths"][template][method][status]["schema"]
    return Draft202012Validator(_closed(schema) | {"components": _components()})


def _error_errors(body: Any) -> list[Any]:
    validator = Draft202012Validator({"$ref": "#/components/schemas/ErrorResponse", "components": _components()})
    return list(validator.iter_errors(body))


def _status_key(responses: dict[str, Any], status: int) -> str | None:
    if str(status) in responses:
        return str(status)
    wildcard = f"{str(status)[0]}XX"
    return wildcard if wildcard in responses else None


def check(method: str, path: str, status: int, body: Any) -> list[Violation]:
    """Every difference between one answer and the documentation of its route."""
    if status >= 500:  # Discord's server errors (planned faults here) are outside the API description
        return []
    responses = documented_route(method, path)
    if responses is None and status == 404:  # a route the sandbox does not serve: Discord's plain 404 error
        return [Violation(method, path, status, e.json_path, _short(e.message)) for e in _error_errors(body)]
    if responses is None:
        return [Violation(method, path, status, "", "route not documented (or not in the extracted subset)")]
    key = _status_key(responses, status)
    if key is None:
        return [Violation(method, path, status, "", f"status not documented (documented: {sorted(responses)})")]
    if responses[key]["schema"] is None:
        if body is not None:
            return [Violation(method, path, status, "", "a body where the documentation has none")]
        return []
    if body is None:
        return [Violation(method, path, status, "", "no JSON body where the documentation has one")]
    template = next(t for p, t in _patterns() if p.match(path))
    validator = _validator(f"{method.lower()} {template}", key)
    return [
        Violation(method, path, status, error.json_path, _short(error.message))
        for error in sorted(validator.iter_errors(body), key=lambda e: e.json_path)
    ]


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def violations(requests: Iterable[RecordedRequest]) -> Iterator[Violation]:
    """The violations of every recorded REST answer."""
    for record in requests:
        yield from check(record.method, record.path, record.status, record.response)


def assert_conforms(requests: Iterable[RecordedRequest]) -> int:
    """Raise AssertionError listing every violation; return how many answers were checked."""
    records = list(requests)
    found = list(violations(records))
    if found:
        listed = "\n".join(f"  {v}" for v in dict.fromkeys(found))
        raise AssertionError(f"{len(found)} answers of the sandbox differ from Discord's documentation:\n{listed}")
    return len(records)
