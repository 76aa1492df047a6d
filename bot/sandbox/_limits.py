"""Discord's limits on what a bot sends, checked as Discord checks them: a 400 with code 50035 ("Invalid Form
Body") whose ``errors`` name each offending field, or the interaction codes for late, repeated or expired answers."""

from __future__ import annotations

import json
import time
from typing import Any

from ._http import ApiError
from ._world import JSON

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
#: (field, limit) of an embed's text parts; ``fields`` entries have their own.
EMBED_TEXT_LIMITS = (("title", 256), ("description", 4096))
MAX_EMBED_FIELDS = 25
MAX_FIELD_NAME = 256
MAX_FIELD_VALUE = 1024
MAX_FOOTER = 2048
MAX_AUTHOR_NAME = 256
MAX_ACTION_ROWS = 5
MAX_ROW_ITEMS = 5
MAX_SELECT_OPTIONS = 25
MAX_CUSTOM_ID = 100
MAX_ALLOWED_MENTION_IDS = 100
#: How long an interaction token takes followups and edits (15 minutes).
TOKEN_LIFETIME = 15 * 60.0
_ACTION_ROW, _SELECTS = 1, (3, 5, 6, 7, 8)


def _error(code: str, message: str) -> JSON:
    return {"_errors": [{"code": code, "message": message}]}


def _too_long(limit: int) -> JSON:
    return _error("BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _bad_length(low: int, high: int) -> JSON:
    return _error("BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")


def _put(errors: JSON, path: tuple[str, ...], error: JSON) -> None:
    node = errors
    for key in path:
        node = node.setdefault(key, {})
    node.setdefault("_errors", []).extend(error["_errors"])


def _embed_errors(embed: JSON, where: tuple[str, ...], errors: JSON) -> int:
    """Record the embed's length errors; return its size as Discord counts it towards 6,000."""
    size = 0
    for key, limit in EMBED_TEXT_LIMITS:
        text = str(embed.get(key) or "")
        size += len(text)
        if len(text) > limit:
            _put(errors, (*where, key), _too_long(limit))
    fields = embed.get("fields") or []
    if len(fields) > MAX_EMBED_FIELDS:
        _put(errors, (*where, "fields"), _too_long(MAX_EMBED_FIELDS))
    for index, field in enumerate(fields):
        for key, limit in (("name", MAX_FIELD_NAME), ("value", MAX_FIELD_VALUE)):
            text = str(field.get(key) or "")
            size += len(text)
            if len(text) > limit:
                _put(errors, (*where, "fields", str(index), key), _too_long(limit))
    for part, key, limit in (("footer", "text", MAX_FOOTER), ("author", "name", MAX_AUTHOR_NAME)):
        text = str((embed.get(part) or {}).get(key) or "")
        size += len(text)
        if len(text) > limit:
            _put(errors, (*where, part, key), _too_long(limit))
    return size


def _component_errors(components: list[Any], errors: JSON) -> None:
    if len(components) > MAX_ACTION_ROWS:
        _put(errors, ("components",), _too_long(MAX_ACTION_ROWS))
    for r, row in enumerate(components):
        items = row.get("components") or [] if row.get("type") == _ACTION_ROW else []
        if row.get("type") == _ACTION_ROW and not 1 <= len(items) <= MAX_ROW_ITEMS:
            _put(errors, ("components", str(r), "components"), _bad_length(1, MAX_ROW_ITEMS))
        for i, item in enumerate(items):
            where = ("components", str(r), "components", str(i))
            custom_id = item.get("custom_id")
            if custom_id is not None and not 1 <= len(str(custom_id)) <= MAX_CUSTOM_ID:
                _put(errors, (*where, "custom_id"), _bad_length(1, MAX_CUSTOM_ID))
            if item.get("type") == 3 and not 1 <= len(item.get("options") or []) <= MAX_SELECT_OPTIONS:
                _put(errors, (*where, "options"), _bad_length(1, MAX_SELECT_OPTIONS))


def _mention_errors(allowed: JSON, errors: JSON) -> None:
    parse = allowed.get("parse") or []
    for kind in ("users", "roles"):
        ids = allowed.get(kind) or []
        if kind in parse and ids:
            message = f"parse:[{json.dumps(kind)}] and {kind}: {json.dumps(ids)} are mutually exclusive."
            _put(errors, ("allowed_mentions",), _error("MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE", message))
        if len(ids) > MAX_ALLOWED_MENTION_IDS:
            _put(errors, ("allowed_mentions", kind), _too_long(MAX_ALLOWED_MENTION_IDS))


def check_message(body: JSON) -> None:
    """Refuse a message body (create or edit) over Discord's limits, naming every offending field."""
    errors: JSON = {}
    content = body.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        _put(errors, ("content",), _too_long(MAX_CONTENT))
    embeds = body.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        _put(errors, ("embeds",), _too_long(MAX_EMBEDS))
    total = sum(_embed_errors(embed, ("embeds", str(i)), errors) for i, embed in enumerate(embeds))
    if total > MAX_EMBED_TOTAL:
        message = f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"
        _put(errors, ("embeds",), _error("MAX_EMBED_SIZE_EXCEEDED", message))
    _component_errors(body.get("components") or [], errors)
    if isinstance(body.get("allowed_mentions"), dict):
        _mention_errors(body["allowed_mentions"], errors)
    if errors:
        raise ApiError(400, 50035, "Invalid Form Body", errors)


def check_token_alive(created: float, lifetime: float = TOKEN_LIFETIME) -> None:
    """Refuse a followup or edit on an interaction token older than its lifetime, as Discord does."""
    if time.monotonic() - created > lifetime:
        raise ApiError(401, 50027, "Invalid Webhook Token")
