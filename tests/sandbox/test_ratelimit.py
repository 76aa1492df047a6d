"""The sandbox's rate limits answer as Discord's do: buckets with ``X-RateLimit-*`` headers, 429 with
``retry_after`` and ``global``; interaction callbacks are exempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.sandbox import LoopbackDiscord
from bot.sandbox._interactions import TYPE_APPLICATION_COMMAND
from tests.conformance.checker import assert_conforms

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Reset-After")


@pytest.fixture
async def limited() -> AsyncIterator[tuple[LoopbackDiscord, aiohttp.ClientSession, Any]]:
    async with LoopbackDiscord(rate_limits=True) as server, aiohttp.ClientSession() as http:
        guild = server.create_guild("g")
        yield server, http, guild
        assert_conforms(server.requests)


async def call(http: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any, Any]:
    async with http.request(method, url, json=body) as response:
        data = await response.json() if response.content_length else None
        return response.status, data, response.headers


async def test_five_messages_per_five_seconds_per_channel(limited: Any) -> None:
    server, http, guild = limited
    first, second = server.create_channel(guild, "a"), server.create_channel(guild, "b")
    url = f"{server.base_url}/channels/{first.id}/messages"
    answers = [await call(http, "POST", url, {"content": str(i)}) for i in range(6)]
    assert [status for status, _, _ in answers] == [200] * 5 + [429]
    _, _, headers = answers[0]
    assert all(name in headers for name in (*HEADERS, "X-RateLimit-Bucket"))
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("5", "4")
    assert 4.5 < float(headers["X-RateLimit-Reset-After"]) <= 5.0
    _, body, headers = answers[-1]
    assert body["global"] is False and 4.0 < body["retry_after"] <= 5.0
    assert headers["Retry-After"] == "5" and headers["X-RateLimit-Remaining"] == "0" and headers["Via"]
    other = await call(http, "POST", f"{server.base_url}/channels/{second.id}/messages", {"content": "x"})
    assert other[0] == 200, "the bucket is per channel"
    assert server.rest.ratelimits.hits == {"user": 1}


async def test_reactions_one_per_250_ms_per_channel(limited: Any) -> None:
    server, http, guild = limited
    channel = server.create_channel(guild, "a")
    posted = await call(http, "POST", f"{server.base_url}/channels/{channel.id}/messages", {"content": "x"})
    base = f"{server.base_url}/channels/{channel.id}/messages/{posted[1]['id']}/reactions"
    assert (await call(http, "PUT", f"{base}/%F0%9F%91%8D/@me"))[0] == 204
    status, body, _ = await call(http, "PUT", f"{base}/%E2%9C%85/@me")
    assert status == 429 and 0 < body["retry_after"] <= 0.25


async def test_fifty_requests_per_second_in_all(limited: Any) -> None:
    server, http, guild = limited
    channels = [server.create_channel(guild, f"c{i}") for i in range(51)]
    answers = [await call(http, "GET", f"{server.base_url}/channels/{c.id}") for c in channels]
    assert [status for status, _, _ in answers].count(200) == 50
    status, body, headers = answers[-1]
    assert status == 429 and body["global"] is True and headers["X-RateLimit-Global"] == "true"
    assert server.rest.ratelimits.hits == {"global": 1}


async def test_interaction_callbacks_are_exempt(limited: Any) -> None:
    server, http, guild = limited
    channel = server.create_channel(guild, "a")
    member = server.create_member(guild, "m")
    for _ in range(60):
        pending = server.interactions.open(TYPE_APPLICATION_COMMAND, {"name": "x"}, guild, channel, member)
        url = f"{server.base_url}/interactions/{pending.id}/{pending.token}/callback"
        assert (await call(http, "POST", url, {"type": 5}))[0] == 200
    assert server.rest.ratelimits.total_429s == 0


async def test_off_by_default() -> None:
    async with LoopbackDiscord() as server, aiohttp.ClientSession() as http:
        channel = server.create_channel(server.create_guild("g"), "a")
        url = f"{server.base_url}/channels/{channel.id}/messages"
        assert [(await call(http, "POST", url, {"content": "x"}))[0] for _ in range(8)] == [200] * 8
