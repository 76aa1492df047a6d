"""The sandbox refuses what Discord refuses, with Discord's error JSON (``code``, ``message``, ``errors``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.sandbox import LoopbackDiscord
from bot.sandbox._interactions import TYPE_APPLICATION_COMMAND, PendingInteraction
from tests.conformance.checker import assert_conforms


class Client:
    """Raw REST calls to the sandbox as a bot would make them."""

    def __init__(self, server: LoopbackDiscord, http: aiohttp.ClientSession) -> None:
        self.server, self.http = server, http
        guild = server.create_guild("limits")
        self.guild, self.channel = guild, server.create_channel(guild, "c")
        self.member = server.create_member(guild, "m")

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.server.base_url + path, json=body) as response:
            return response.status, (await response.json() if response.content_length else None)

    async def send(self, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", f"/channels/{self.channel.id}/messages", body)

    def interaction(self) -> PendingInteraction:
        kind = TYPE_APPLICATION_COMMAND
        data = {"id": "1", "name": "x", "type": 1}
        return self.server.interactions.open(kind, data, self.guild, self.channel, self.member)

    async def callback(self, pending: PendingInteraction, body: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", f"/interactions/{pending.id}/{pending.token}/callback", body)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with LoopbackDiscord() as server, aiohttp.ClientSession() as http:
        yield Client(server, http)
        assert_conforms(server.requests)  # the error answers have Discord's documented shape too


def form_error(answer: Any, *path: str) -> str:
    """The first ``errors`` code at ``path`` of a 50035 answer."""
    assert answer["code"] == 50035 and answer["message"] == "Invalid Form Body"
    node = answer["errors"]
    for key in path:
        node = node[key]
    return str(node["_errors"][0]["code"])


def embed(**fields: Any) -> dict[str, Any]:
    return {"type": "rich", **fields}


def button(custom_id: str) -> dict[str, Any]:
    return {"type": 2, "style": 1, "label": "b", "custom_id": custom_id}


async def test_content_over_2000_characters(client: Client) -> None:
    assert (await client.send({"content": "x" * 2000}))[0] == 200
    status, answer = await client.send({"content": "x" * 2001})
    assert status == 400
    assert form_error(answer, "content") == "BASE_TYPE_MAX_LENGTH"


async def test_more_than_10_embeds(client: Client) -> None:
    status, answer = await client.send({"embeds": [embed(title="t")] * 11})
    assert (status, form_error(answer, "embeds")) == (400, "BASE_TYPE_MAX_LENGTH")


@pytest.mark.parametrize(
    ("one", "path"),
    [
        (embed(title="t" * 257), ("embeds", "0", "title")),
        (embed(description="d" * 4097), ("embeds", "0", "description")),
        (embed(fields=[{"name": "n", "value": "v"}] * 26), ("embeds", "0", "fields")),
        (embed(fields=[{"name": "n", "value": "v" * 1025}]), ("embeds", "0", "fields", "0", "value")),
        (embed(footer={"text": "f" * 2049}), ("embeds", "0", "footer", "text")),
    ],
)
async def test_embed_part_limits(client: Client, one: dict[str, Any], path: tuple[str, ...]) -> None:
    status, answer = await client.send({"embeds": [one]})
    assert (status, form_error(answer, *path)) == (400, "BASE_TYPE_MAX_LENGTH")


async def test_embeds_over_6000_characters_in_all(client: Client) -> None:
    within = [embed(description="d" * 3000), embed(description="d" * 3000)]
    assert (await client.send({"embeds": within}))[0] == 200
    status, answer = await client.send({"embeds": [*within, embed(title="t")]})
    assert (status, form_error(answer, "embeds")) == (400, "MAX_EMBED_SIZE_EXCEEDED")


async def test_more_than_5_action_rows(client: Client) -> None:
    rows = [{"type": 1, "components": [button(f"b{i}")]} for i in range(6)]
    status, answer = await client.send({"content": "x", "components": rows})
    assert (status, form_error(answer, "components")) == (400, "BASE_TYPE_MAX_LENGTH")


async def test_more_than_25_select_options(client: Client) -> None:
    options = [{"label": str(i), "value": str(i)} for i in range(26)]
    select = {"type": 3, "custom_id": "s", "options": options}
    status, answer = await client.send({"content": "x", "components": [{"type": 1, "components": [select]}]})
    assert status == 400
    assert form_error(answer, "components", "0", "components", "0", "options") == "BASE_TYPE_BAD_LENGTH"


async def test_custom_id_over_100_characters(client: Client) -> None:
    row = {"type": 1, "components": [button("c" * 101)]}
    status, answer = await client.send({"content": "x", "components": [row]})
    assert status == 400
    assert form_error(answer, "components", "0", "components", "0", "custom_id") == "BASE_TYPE_BAD_LENGTH"


async def test_allowed_mentions_parse_and_ids_conflict(client: Client) -> None:
    mentions = {"parse": ["users"], "users": [str(client.member.id)]}
    status, answer = await client.send({"content": "hi", "allowed_mentions": mentions})
    assert status == 400
    assert form_error(answer, "allowed_mentions") == "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"


async def test_an_initial_response_after_3_seconds_is_unknown_interaction(client: Client) -> None:
    client.server.interactions.ack_deadline = 0.05
    pending = client.interaction()
    await asyncio.sleep(0.1)
    status, answer = await client.callback(pending, {"type": 4, "data": {"content": "late"}})
    assert (status, answer["code"], answer["message"]) == (404, 10062, "Unknown interaction")


async def test_a_second_initial_response_is_already_acknowledged(client: Client) -> None:
    pending = client.interaction()
    assert (await client.callback(pending, {"type": 5}))[0] == 200
    status, answer = await client.callback(pending, {"type": 4, "data": {"content": "again"}})
    assert (status, answer["code"]) == (400, 40060)


async def test_a_followup_after_the_token_expired_is_refused(client: Client) -> None:
    client.server.interactions.token_lifetime = 0.2
    pending = client.interaction()
    assert (await client.callback(pending, {"type": 5}))[0] == 200
    path = f"/webhooks/{client.server.application_id}/{pending.token}"
    assert (await client.call("POST", path + "?wait=true", {"content": "in time"}))[0] == 200
    await asyncio.sleep(0.3)
    status, answer = await client.call("POST", path + "?wait=true", {"content": "too late"})
    assert (status, answer["code"], answer["message"]) == (401, 50027, "Invalid Webhook Token")
