"""The conformance checker itself: it accepts the sandbox's answers and refuses a deliberately broken one."""

from __future__ import annotations

import copy
import json

import aiohttp
import pytest

from bot.sandbox.server import LoopbackDiscord
from tests.conformance.checker import SUBSET, assert_conforms, check, documented_route


def test_the_subset_records_the_spec_commit_it_was_extracted_from() -> None:
    source = json.loads(SUBSET.read_text(encoding="utf-8"))["source"]
    assert source["repository"] == "discord/discord-api-spec"
    assert len(source["commit"]) == 40
    assert source["version"] == "10"


def test_routes_resolve_literal_segments_first() -> None:
    original = documented_route("GET", "/webhooks/1/tok/messages/@original")
    by_id = documented_route("GET", "/webhooks/1/tok/messages/2")
    assert original is not None and by_id is not None
    assert documented_route("GET", "/no/such/route") is None


async def _sandbox_answers() -> list[object]:
    async with LoopbackDiscord() as server:
        guild = server.create_guild("g")
        channel = server.create_channel(guild, "c")
        headers = {"Authorization": f"Bot {server.token}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for path in ("/users/@me", "/oauth2/applications/@me", "/gateway/bot", f"/channels/{channel.id}"):
                async with http.get(server.base_url + path) as response:
                    assert response.status == 200
            url = f"{server.base_url}/channels/{channel.id}/messages"
            async with http.post(url, json={"content": "hello", "components": []}) as response:
                assert response.status == 200
            async with http.get(url) as response:
                assert response.status == 200
        return list(server.requests)


async def test_the_sandbox_answers_conform() -> None:
    assert assert_conforms(await _sandbox_answers()) == 6


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda m: m.pop("channel_id"), "'channel_id' is a required property"),
        (lambda m: m.update(guild_id="1"), "Unevaluated properties are not allowed ('guild_id' was unexpected)"),
        (lambda m: m["author"].update(id=7), "7 is not of type 'string'"),
        (lambda m: m.update(edited_timestamp=0), "0 is not of type 'string', 'null'"),
    ],
)
async def test_a_deliberately_broken_answer_fails(breakage: object, expected: str) -> None:
    records = await _sandbox_answers()
    sent = next(r for r in records if r.method == "POST")
    assert check(sent.method, sent.path, sent.status, sent.response) == []
    broken = copy.deepcopy(sent)
    breakage(broken.response)  # type: ignore[operator]
    with pytest.raises(AssertionError, match="differ from Discord's documentation") as failure:
        assert_conforms([*records, broken])
    print(failure.value)  # the demonstration, visible with -s
    assert expected in str(failure.value)


def test_an_undocumented_status_and_a_missing_body_fail() -> None:
    assert "status not documented" in str(check("GET", "/users/@me", 201, {}))
    assert "no JSON body" in str(check("GET", "/users/@me", 200, None))
    assert "a body where the documentation has none" in str(check("POST", "/channels/1/typing", 204, {"x": 1}))


def test_an_unserved_route_must_answer_discords_plain_404() -> None:
    assert check("GET", "/channels/1/pins", 404, {"message": "404: Not Found", "code": 0}) == []
    assert "'code' is a required property" in str(check("GET", "/channels/1/pins", 404, {"message": "nope"}))
    assert "route not documented" in str(check("GET", "/channels/1/pins", 200, []))
