"""Discord's bad days on demand: REST answers that fail (403 Missing Access / Permissions, 404 Unknown Message /
Channel, 5xx) and gateway faults (op 7 Reconnect, op 9 Invalid Session, a socket dropped without a close frame,
heartbeats no longer acknowledged).

A REST fault matches a method and a route template (as the sandbox spells it, e.g.
``/channels/{channel_id}/messages``); it may first run an action (a moderator deleting the channel or the message,
so the ordinary handler answers 10003 / 10008 by itself) and may answer an error of its own, for its next
``times`` matching requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ._gateway import OP_INVALID_SESSION, OP_RECONNECT, Gateway
from ._http import ApiError, Handler, json_response

#: The documented errors a test usually wants, by name.
MISSING_ACCESS = (403, 50001, "Missing Access")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")
UNKNOWN_CHANNEL = (404, 10003, "Unknown Channel")
UNKNOWN_MESSAGE = (404, 10008, "Unknown Message")
BAD_GATEWAY = (502, 0, "502: Bad Gateway")
SERVICE_UNAVAILABLE = (503, 0, "503: Service Unavailable")

Action = Callable[[web.Request], Awaitable[None]]


@dataclass(eq=False)
class RestFault:
    """One planned failure: which requests, what happens first, what is answered, how many more times."""

    method: str
    route: str
    error: tuple[int, int, str] | None = None
    before: Action | None = None
    times: int = 1
    #: How many requests it has hit.
    hits: int = 0


class RestFaults:
    """Planned REST failures and the aiohttp middleware that applies them to ``/api/v10`` requests."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.planned: list[RestFault] = []

    def add(
        self,
        method: str,
        route: str,
        error: tuple[int, int, str] | None = None,
        *,
        before: Action | None = None,
        times: int = 1,
    ) -> RestFault:
        """Plan a failure of the next ``times`` requests ``method route`` (answer ``error``, after ``before``)."""
        fault = RestFault(method.upper(), route, error, before, times)
        self.planned.append(fault)
        return fault

    def clear(self) -> None:
        """Forget every planned failure."""
        self.planned.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Apply the first planned failure that matches the request."""
        resource = request.match_info.route.resource
        route = resource.canonical.removeprefix(self.prefix) if resource is not None else None
        fault = next((f for f in self.planned if f.times > 0 and f.method == request.method and f.route == route), None)
        if fault is None:
            return await handler(request)
        fault.times -= 1
        fault.hits += 1
        if fault.before is not None:
            await fault.before(request)
        if fault.error is None:
            return await handler(request)
        status, code, message = fault.error
        if status >= 500:
            return json_response({"message": message, "code": code}, status)
        raise ApiError(status, code, message)


class GatewayFaults:
    """The gateway's faults, on every connected session at once."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def reconnect(self) -> int:
        """Send op 7 Reconnect; the client closes and RESUMEs. Returns how many sessions got it."""
        sessions = self.gateway.sessions
        for session in sessions:
            assert session.ws is not None
            await session.ws.send_json({"op": OP_RECONNECT, "d": None})
        return len(sessions)

    async def invalid_session(self, *, resumable: bool) -> int:
        """Send op 9 Invalid Session (``d`` = ``resumable``). Not resumable: the session is forgotten at once, so
        the events until the client IDENTIFYs again are lost to it (it must catch up from history)."""
        sessions = self.gateway.sessions
        for session in sessions:
            assert session.ws is not None
            if not resumable:
                self.gateway.forget(session)
            await session.ws.send_json({"op": OP_INVALID_SESSION, "d": resumable})
        return len(sessions)

    def drop(self) -> int:
        """Cut every socket without a close frame (the client sees the connection end, code 1006, and RESUMEs);
        the sessions keep their backlog."""
        dropped = 0
        for session in self.gateway.sessions:
            transport = self.gateway.transports.get(session.ws) if session.ws is not None else None
            if isinstance(transport, asyncio.Transport):
                session.ws = None
                transport.abort()
                dropped += 1
        return dropped

    def zombie(self) -> int:
        """Stop acknowledging heartbeats and sending anything on every socket (a zombied connection): the client
        notices after its heartbeat timeout, closes and RESUMEs, and the backlog is replayed."""
        sessions = self.gateway.sessions
        for session in sessions:
            session.silent = True
        return len(sessions)
