"""Discord's REST rate limits: per-route buckets keyed by the major parameter, the global limit, the
``X-RateLimit-*`` headers on every answer and 429 answers with ``retry_after`` and ``global``.

Emulated as documented: 5 messages per 5 s per channel, reactions 1 per 250 ms per channel, 50 requests per second
for the bot in all; interaction endpoints (the callback, followups and edits through the interaction token) are
bound to neither the global limit nor a shared bucket's count beyond their own. Off unless switched on
(``LoopbackDiscord(rate_limits=True)``); every 429 is counted in :attr:`RateLimits.hits`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from ._http import ApiError, Handler, json_response

#: (method, route template) -> (requests, per seconds); a route not listed shares the default.
ROUTE_LIMITS: dict[tuple[str, str], tuple[int, float]] = {
    ("POST", "/channels/{channel_id}/messages"): (5, 5.0),
    ("PATCH", "/channels/{channel_id}/messages/{message_id}"): (5, 5.0),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}"): (5, 1.0),
    ("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"): (1, 0.25),
    ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"): (1, 0.25),
    ("POST", "/webhooks/{app_id}/{token}"): (5, 2.0),
}
DEFAULT_LIMIT = (50, 1.0)
GLOBAL_LIMIT = (50, 1.0)
#: Routes of the interaction token: exempt from the global limit.
_INTERACTION_PREFIXES = ("/interactions/", "/webhooks/")
#: The callback has no bucket at all.
_EXEMPT_PREFIX = "/interactions/"
_MAJOR = ("channel_id", "guild_id", "token")
#: The proxy header Discord's answers carry (discord.py treats a 429 without it as a Cloudflare ban).
VIA = "1.1 google"


@dataclass
class Window:
    """A fixed window: ``count`` requests since ``start``."""

    limit: int
    per: float
    start: float = 0.0
    count: int = 0

    def take(self, now: float) -> float:
        """Count a request if the window has room and return 0, else return the seconds until it resets."""
        if now >= self.start + self.per:
            self.start, self.count = now, 0
        if self.count >= self.limit:
            return self.start + self.per - now
        self.count += 1
        return 0.0

    def headers(self, now: float, bucket: str) -> dict[str, str]:
        """The ``X-RateLimit-*`` headers as Discord sends them."""
        reset_after = max(0.0, self.start + self.per - now)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - self.count)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }


class RateLimits:
    """The buckets of one bot, and an aiohttp middleware that applies them to ``/api/v10`` requests."""

    def __init__(self, prefix: str, *, enabled: bool = False) -> None:
        self.prefix = prefix
        self.enabled = enabled
        self._buckets: dict[tuple[str, str], Window] = {}
        self._global = Window(*GLOBAL_LIMIT)
        #: 429 answers given, by scope ("user" for a route bucket, "global").
        self.hits: Counter[str] = Counter()

    @property
    def total_429s(self) -> int:
        """How many requests were answered 429."""
        return sum(self.hits.values())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer 429 when a bucket or the global limit is spent; add the bucket's headers to every answer."""
        resource = request.match_info.route.resource
        path = request.path.removeprefix(self.prefix)
        if not self.enabled or resource is None or path.startswith(_EXEMPT_PREFIX):
            return await handler(request)
        route = resource.canonical.removeprefix(self.prefix)
        limit = ROUTE_LIMITS.get((request.method, route), DEFAULT_LIMIT)
        major = next((request.match_info[k] for k in _MAJOR if k in request.match_info), "")
        bucket_hash = hashlib.sha1(f"{request.method} {route}".encode(), usedforsecurity=False).hexdigest()[:16]
        window = self._buckets.setdefault((bucket_hash, major), Window(*limit))
        now = time.monotonic()
        if not path.startswith(_INTERACTION_PREFIXES) and (wait := self._global.take(now)):
            return self._limited(wait, None, bucket_hash, now, is_global=True)
        if wait := window.take(now):
            return self._limited(wait, window, bucket_hash, now, is_global=False)
        try:
            response = await handler(request)
        except ApiError as exc:
            response = json_response(exc.body(), exc.status)
        response.headers.update(window.headers(now, bucket_hash))
        return response

    def _limited(self, wait: float, window: Window | None, bucket: str, now: float, *, is_global: bool) -> web.Response:
        self.hits["global" if is_global else "user"] += 1
        body = {"message": "You are being rate limited.", "retry_after": round(wait, 3), "global": is_global, "code": 0}
        response = json_response(body, 429)
        response.headers["Retry-After"] = str(math.ceil(wait))
        response.headers["Via"] = VIA  # clients take a 429 without it for a Cloudflare ban
        response.headers["X-RateLimit-Scope"] = "global" if is_global else "user"
        if is_global:
            response.headers["X-RateLimit-Global"] = "true"
        else:
            assert window is not None
            response.headers.update(window.headers(now, bucket))
        return response
