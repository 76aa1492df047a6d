"""Prompts belong to a server: two servers each add a prompt called ``budget`` with different labels; each one
classifies, tallies, exports and autocompletes only its own."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import World, new_guild, post_prompt, text_of

SERVERS = {
    "north": (
        "Budget: spend more or less?",
        "raise: The budget should go up | raise the budget, we need more money; spend more\n"
        "cut: The budget should go down | cut the budget, it is far too big; spend less",
        "raise the budget, we need more money",
        "raise",
    ),
    "south": (
        "Budget: schools or roads?",
        "schools: Spend it on schools | fund the schools, teachers need money; build classrooms\n"
        "roads: Spend it on roads | fix the roads first, potholes everywhere; build highways",
        "fund the schools, teachers need money",
        "schools",
    ),
}


def _tally_counts(result: Any) -> dict[str, int]:
    table = result.embeds[0]["description"].strip("`\n").splitlines()
    return {line.split()[0]: int(line.split()[1]) for line in table[1:-1]}


async def _add_budget(world: World, title: str, labels: str) -> None:
    opened = await world.slash(world.moderator, "prompt", "add", name="budget")
    assert opened.modal is not None, text_of(opened)
    form = {"title": title, "question": "What should the budget do?", "context": "The budget is debated.",
            "labels": labels, "source": ""}  # fmt: skip
    added = await world.server.submit_modal(
        world.guild, world.channel.id, world.moderator, "stancebot:prompt-add", form
    )
    assert "Added **budget**" in text_of(added), text_of(added)


async def test_two_servers_each_have_their_own_prompt_of_the_same_name(world: World) -> None:
    guild, channel, moderator = new_guild(world.server, "Second guild")
    worlds = {"north": world, "south": World(world.server, world.runtime, guild, channel, moderator)}
    threads = {}
    for name, w in worlds.items():
        title, labels, _text, _label = SERVERS[name]
        await _add_budget(w, title, labels)
    for name, w in worlds.items():
        title, _labels, text, label = SERVERS[name]
        choices = await w.server.autocomplete(
            w.guild, w.channel.id, w.moderator, "prompt", subcommand="post", focused="prompt", options={"prompt": "bud"}
        )
        assert [(c["value"], c["name"]) for c in choices.choices] == [("budget", f"budget: {title}")]
        threads[name] = await post_prompt(w, "budget")
        outcome = await w.reply(threads[name], "maya", text)
        assert outcome.result.label == label, outcome.result
        assert outcome.reply.guild_id == w.guild.id

    own = {"north": {"raise", "cut", "unclear"}, "south": {"schools", "roads", "unclear"}}
    for name, w in worlds.items():
        label = SERVERS[name][3]
        tally = await w.slash(w.member("maya"), "stance", "tally", prompt="budget")
        counts = _tally_counts(tally)
        assert set(counts) == own[name]
        assert counts[label] == 1 and sum(counts.values()) == 1

        exported = await w.slash(w.moderator, "stance", "export", prompt="budget", format="json")
        assert exported.ephemeral
        upload = next(r for r in reversed(w.server.requests) if r.files)
        [(filename, data)] = upload.files
        assert filename == f"budget-{w.guild.id}.json"
        rows = json.loads(data)
        assert [(row["text"], row["label"]) for row in rows] == [(SERVERS[name][2], label)]
