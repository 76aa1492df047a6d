"""End to end: the bot never sends what Discord would refuse (the sandbox answers 50035 like Discord), even with
the largest prompt a moderator can add (ten labels with the longest names and descriptions, the longest texts),
replies near Discord's 2,000 characters, a public tally, a digest quoting those replies, and review posts."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import World, post_prompt, slash, text_of, until

LABELS = [
    f"{word}_{'x' * (31 - len(word))}" for word in ("up", "down", "hold", "mix", "ask", "wait", "vote", "cap", "tax")
]


def _labels_field() -> str:
    lines = []
    for name in LABELS:
        description = f"The {name} stance, " + "described at length " * 10
        lines.append(f"{name}: {description[:200]} | {name} now; more {name}")
    return "\n".join(lines)


def _embed_size(embed: dict[str, Any]) -> int:
    fields = embed.get("fields") or []
    parts = [embed.get("title"), embed.get("description"), (embed.get("footer") or {}).get("text")]
    return sum(len(p or "") for p in parts) + sum(len(f["name"]) + len(f["value"]) for f in fields)


async def test_the_largest_prompt_long_replies_tally_digest_and_reviews_stay_within_limits(world: World) -> None:
    server = world.server
    world.runtime.services.repo.review_below = 1.0  # every reply goes to review
    review = server.create_channel(world.guild, "review")
    await slash(world, world.moderator, "review", "channel", channel=review)
    opened = await slash(world, world.moderator, "prompt", "add", name="big_prompt")
    assert opened.modal is not None
    form = {
        "title": "T" * 100,
        "question": "Q" * 299 + "?",
        "context": "C" * 1000,
        "labels": _labels_field(),
        "source": "https://example.com/" + "s" * 280,
    }
    added = await server.submit_modal(world.guild, world.channel.id, world.moderator, "stancebot:prompt-add", form)
    assert "Added **big_prompt**" in text_of(added)
    thread_id = await post_prompt(world, "big_prompt")
    for i, name in enumerate(LABELS):
        text = f"{name} now; more {name}. " + "This is a long reply with **markdown** and `code` " * 38
        assert 1900 < len(text) <= 2000
        await world.reply(thread_id, f"member{i}", text)
    tally = await slash(world, world.moderator, "stance", "tally", prompt="big_prompt", public=True)
    assert tally.embeds, text_of(tally)
    digest = await slash(world, world.moderator, "digest", "now", prompt="big_prompt")
    assert digest.followups and digest.followups[0]["embeds"], text_of(digest)
    assert len(digest.followups[0]["embeds"][0].get("fields", [])) >= 2
    prompt_post = next(r for r in server.requests if r.method == "POST" and r.json and r.json.get("components"))
    sizes = [_embed_size(prompt_post.json["embeds"][0]), _embed_size(digest.followups[0]["embeds"][0])]
    print(f"prompt embed {sizes[0]} characters, digest embed {sizes[1]}")
    assert sizes[0] > 3000, "the prompt did not come near the 6,000-character embed limit"

    async def reviews_out() -> bool:  # the review channel's bucket lets 5 posts out every 5 seconds
        return sum(1 for m in review.messages if int(m["author"]["id"]) == server.bot_user.id) == len(LABELS)

    await until(reviews_out)
    refused = [(r.method, r.route, r.response) for r in server.requests if 400 <= r.status < 500 and r.status != 429]
    assert refused == [], refused
