"""What the sandbox's REST modules share: the request keys, the recorded request, Discord's error shape."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: An uploaded file: (form field, filename, bytes).
Upload = tuple[str, str, bytes]
#: The parsed JSON body (for multipart: ``payload_json``) and the uploads, stored on each API request.
BODY: web.RequestKey[Any] = web.RequestKey("body")
UPLOADS: web.RequestKey[list[Upload]] = web.RequestKey("uploads")


@dataclass(eq=False)
class RecordedRequest:
    """One REST request the bot made, and what the sandbox answered."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[tuple[str, bytes]]
    time: float
    route: str | None = None
    status: int = 0
    response: Any = field(default=None, repr=False)


class ApiError(Exception):
    """A Discord JSON error answer (``{"code", "message"}``, with ``errors`` naming the fields of a bad form)."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        """The JSON Discord answers."""
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            data["errors"] = self.errors
        return data


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer whose Content-Type is exactly ``application/json`` (discord.py compares it verbatim)."""
    headers = {"Content-Type": "application/json"}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers)
