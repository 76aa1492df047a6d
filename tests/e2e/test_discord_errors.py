"""End to end: Discord refuses or fails a request the bot makes for a moderator (403 Missing Access / Missing
Permissions, 404 Unknown Channel / Unknown Message after a moderator deleted something, 5xx); the moderator is
told what is wrong, privately, and nothing already stored is lost."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from bot.sandbox._faults import BAD_GATEWAY, MISSING_ACCESS, MISSING_PERMISSIONS, SERVICE_UNAVAILABLE
from tests.e2e.conftest import UNFAIR, World, post_prompt, repo_of, slash, tally_of, text_of

SEND = ("POST", "/channels/{channel_id}/messages")
THREAD = ("POST", "/channels/{channel_id}/messages/{message_id}/threads")


async def _stored(world: World) -> tuple[dict[str, int], list[int]]:
    posts = await repo_of(world).prompts.open_posts()
    return await tally_of(world), sorted(p.thread_id for p in posts)


async def _post_again_failing(world: World, route: tuple[str, str], **fault: Any) -> Any:
    """Store a reply under a first post, then make a second ``/prompt post`` meet the fault."""
    thread_id = await post_prompt(world)
    await world.reply(thread_id, "maya", UNFAIR)
    before = await _stored(world)
    planned = world.server.faults.add(*route, **fault)
    result = await slash(world, world.moderator, "prompt", "post", prompt="alliance")
    assert planned.hits == 1
    assert result.ephemeral and all(f["flags"] & 64 for f in result.followups)
    assert await _stored(world) == before, "stored data changed"
    assert before[0] == {"unfair": 1}
    return result


@pytest.mark.parametrize(
    ("error", "told"),
    [(MISSING_ACCESS, "(Missing Access)"), (MISSING_PERMISSIONS, "(Missing Permissions)")],
)
async def test_forbidden_is_named(world: World, error: tuple[int, int, str], told: str) -> None:
    result = await _post_again_failing(world, SEND, error=error)
    assert told in text_of(result)


async def test_the_channel_deleted_while_posting_is_unknown_channel(world: World) -> None:
    async def delete_channel(request: web.Request) -> None:
        await world.server.delete_channel(world.channel)

    result = await _post_again_failing(world, SEND, before=delete_channel)
    assert "(Unknown Channel)" in text_of(result)
    assert any(r.status == 404 and r.response["code"] == 10003 for r in world.server.requests)


async def test_the_prompt_message_deleted_before_its_thread_is_unknown_message(world: World) -> None:
    async def delete_prompt_message(request: web.Request) -> None:
        await world.server.delete_message(world.channel.id, int(request.match_info["message_id"]))

    result = await _post_again_failing(world, THREAD, before=delete_prompt_message)
    assert "(Unknown Message)" in text_of(result)
    assert any(r.status == 404 and r.response["code"] == 10008 for r in world.server.requests)


async def test_a_502_is_retried_and_the_post_goes_through(world: World) -> None:
    thread_id = await post_prompt(world)
    await world.reply(thread_id, "maya", UNFAIR)
    planned = world.server.faults.add(*SEND, error=BAD_GATEWAY)
    result = await slash(world, world.moderator, "prompt", "post", prompt="alliance")
    assert planned.hits == 1 and "Posted" in text_of(result)
    statuses = [r.status for r in world.server.requests if (r.method, r.route) == SEND]
    assert statuses[-2:] == [502, 200]
    tally, threads = await _stored(world)
    assert tally == {"unfair": 1} and len(threads) == 2


async def test_a_503_is_reported_and_nothing_is_lost(world: World) -> None:
    result = await _post_again_failing(world, SEND, error=SERVICE_UNAVAILABLE)
    assert "Discord is having trouble right now (HTTP 503)" in text_of(result)
