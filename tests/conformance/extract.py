"""Extract from Discord's OpenAPI description the response schemas of the routes the sandbox serves.

Run it against a checkout of https://github.com/discord/discord-api-spec to refresh ``discord_v10_subset.json``::

    git --git-dir=SPEC/.git show HEAD:specs/openapi.json > openapi.json
    python -m tests.conformance.extract openapi.json COMMIT > tests/conformance/discord_v10_subset.json

The subset keeps, for every (method, path) below, the documented responses by status (the JSON schema of the body,
or ``null`` for an empty one), and every component schema those reach through ``$ref``; nothing is edited.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

#: The routes ``bot/sandbox`` serves, spelled as in the description.
ROUTES: tuple[tuple[str, str], ...] = (
    ("get", "/users/@me"),
    ("post", "/users/@me/channels"),
    ("get", "/users/{user_id}"),
    ("get", "/oauth2/applications/@me"),
    ("get", "/applications/@me"),
    ("get", "/gateway"),
    ("get", "/gateway/bot"),
    ("get", "/applications/{application_id}/commands"),
    ("put", "/applications/{application_id}/commands"),
    ("get", "/applications/{application_id}/guilds/{guild_id}/commands"),
    ("put", "/applications/{application_id}/guilds/{guild_id}/commands"),
    ("get", "/guilds/{guild_id}"),
    ("get", "/guilds/{guild_id}/channels"),
    ("get", "/guilds/{guild_id}/members/{user_id}"),
    ("get", "/channels/{channel_id}"),
    ("post", "/channels/{channel_id}/typing"),
    ("get", "/channels/{channel_id}/messages"),
    ("post", "/channels/{channel_id}/messages"),
    ("get", "/channels/{channel_id}/messages/{message_id}"),
    ("patch", "/channels/{channel_id}/messages/{message_id}"),
    ("delete", "/channels/{channel_id}/messages/{message_id}"),
    ("post", "/channels/{channel_id}/messages/{message_id}/threads"),
    ("post", "/channels/{channel_id}/threads"),
    ("put", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),
    ("delete", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),
    ("post", "/interactions/{interaction_id}/{interaction_token}/callback"),
    ("post", "/webhooks/{webhook_id}/{webhook_token}"),
    ("get", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
    ("patch", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
    ("delete", "/webhooks/{webhook_id}/{webhook_token}/messages/@original"),
    ("get", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),
    ("patch", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),
    ("delete", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"),
)
_SCHEMA_REF = "#/components/schemas/"
_RESPONSE_REF = "#/components/responses/"


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMA_REF):
            yield ref.removeprefix(_SCHEMA_REF)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract(spec: dict[str, Any], commit: str) -> dict[str, Any]:
    """The subset document: source, routes' responses by status, and the closure of component schemas."""
    paths: dict[str, dict[str, dict[str, Any]]] = {}
    for method, path in ROUTES:
        responses = {}
        for status, answer in spec["paths"][path][method]["responses"].items():
            if "$ref" in answer:
                answer = spec["components"]["responses"][answer["$ref"].removeprefix(_RESPONSE_REF)]
            content = answer.get("content", {}).get("application/json")
            responses[status] = {
                "schema": content["schema"] if content else None,
                "headers": sorted(answer.get("headers", {})),
            }
        paths.setdefault(path, {})[method] = responses
    wanted, schemas = list(_refs(paths)), {}
    while wanted:
        name = wanted.pop()
        if name not in schemas:
            schemas[name] = spec["components"]["schemas"][name]
            wanted.extend(_refs(schemas[name]))
    source = {"repository": "discord/discord-api-spec", "path": "specs/openapi.json", "commit": commit}
    return {
        "source": source | {"openapi": spec["openapi"], "version": spec["info"]["version"]},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def main(argv: list[str]) -> None:
    """``extract.py OPENAPI_JSON COMMIT``: print the subset."""
    with open(argv[1], encoding="utf-8") as handle:
        spec = json.load(handle)
    json.dump(extract(spec, argv[2]), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
