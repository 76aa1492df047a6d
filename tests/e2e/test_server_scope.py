"""End to end: nothing the bot answers in one server reveals another server's prompts or labels, and autocomplete
offers a moderator command's choices to moderators only."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import World, new_guild, post_prompt, repo_of, text_of

SECRET_TITLE = "Budget: the north's secret plan"
SECRET_LABELS = (
    "hush: Keep it quiet | say nothing about the budget; keep it secret\n"
    "leak: Tell everyone | publish the budget; everyone should know"
)
SEEDS = {"alliance", "defense"}
ALLIANCE_LABELS = {"unfair", "fair", "mutual_benefit", "unclear"}


async def _add_prompt(world: World, name: str, title: str, labels: str) -> Any:
    opened = await world.slash(world.moderator, "prompt", "add", name=name)
    assert opened.modal is not None, text_of(opened)
    form = {"title": title, "question": "What now?", "context": "A debate.", "labels": labels, "source": ""}
    return await world.server.submit_modal(world.guild, world.channel.id, world.moderator, "stancebot:prompt-add", form)


def _choices(world: World, who: Any, command: str, sub: str, focused: str, /, **options: Any) -> Any:
    return world.server.autocomplete(
        world.guild, world.channel.id, who, command, subcommand=sub, focused=focused, options=options
    )


async def _labels(world: World, who: Any, message: str) -> set[str]:
    """The choices ``/stance relabel`` offers for the label of ``message``."""
    return _values(await _choices(world, who, "stance", "relabel", "label", message=message, label=""))


def _values(result: Any) -> set[str]:
    return {c["value"] for c in result.choices}


def _everything_said(result: Any) -> str:
    return text_of(result) + " ".join(str(e) for e in result.embeds)


async def test_autocomplete_and_answers_stay_in_the_callers_server(world: World) -> None:
    here = world
    guild, channel, moderator = new_guild(world.server, "North")
    north = World(world.server, world.runtime, guild, channel, moderator)
    added = await _add_prompt(north, "budget", SECRET_TITLE, SECRET_LABELS)
    assert "Added **budget**" in text_of(added)
    secret_thread = await post_prompt(north, "budget")
    secret = await north.reply(secret_thread, "sven", "say nothing about the budget")
    secret_link = f"https://discord.com/channels/{guild.id}/{secret_thread}/{secret.reply.message_id}"
    await north.slash(north.moderator, "digest", "schedule", prompt="budget", channel=channel, weekday=0, time="09:00")

    thread = await post_prompt(here)
    own = await here.reply(thread, "maya", "Japan should pay way more, we protect them for free")
    own_link = f"https://discord.com/channels/{here.guild.id}/{thread}/{own.reply.message_id}"
    mod, maya = here.moderator, here.member("maya")
    await here.slash(mod, "digest", "schedule", prompt="alliance", channel=here.channel, weekday=0, time="09:00")

    # /stance relabel: the labels of a reply of this server; nothing for another server's reply, by id or link
    assert await _labels(here, mod, own_link) == ALLIANCE_LABELS
    for other in (str(secret.reply.message_id), secret_link, "not a link"):
        assert await _labels(here, mod, other) == set()
    assert await _labels(north, north.moderator, secret_link) == {"hush", "leak", "unclear"}
    relabel = await here.slash(mod, "stance", "relabel", message=str(secret.reply.message_id), label="hush")
    assert "not a reply Stancebot has stored in this server" in text_of(relabel)
    assert "leak" not in text_of(relabel)

    # prompt choices: this server's, for everyone's commands; moderators' commands offer them to moderators only
    assert _values(await _choices(here, mod, "prompt", "post", "prompt", prompt="")) == SEEDS
    assert _values(await _choices(north, north.moderator, "prompt", "post", "prompt", prompt="")) == SEEDS | {"budget"}
    assert _values(await _choices(here, maya, "stance", "tally", "prompt", prompt="")) == SEEDS
    for command, sub, focused, options in [
        ("prompt", "post", "prompt", {"prompt": ""}),
        ("prompt", "close", "prompt", {"prompt": ""}),
        ("stance", "export", "prompt", {"prompt": ""}),
        ("stance", "relabel", "label", {"message": own_link, "label": ""}),
        ("stance", "relabel", "label", {"label": ""}),
        ("review", "next", "prompt", {"prompt": ""}),
    ]:
        assert _values(await _choices(here, maya, command, sub, focused, **options)) == set(), (command, sub)
    # /digest cancel: this server's schedules only
    cancel = _values(await _choices(here, mod, "digest", "cancel", "what", what=""))
    north_cancel = _values(await _choices(north, north.moderator, "digest", "cancel", "what", what=""))
    assert len(cancel) == len(north_cancel) == 1 and cancel != north_cancel

    # /prompt add: another server's prompt of that name is none of this server's business
    opened = await here.slash(mod, "prompt", "add", name="budget")
    assert opened.modal is not None and "exists" not in text_of(opened)
    taken = await here.slash(mod, "prompt", "add", name="alliance")  # a seed prompt's name is taken everywhere
    assert taken.modal is None and "already exists" in text_of(taken)
    for who, command, sub, options in [
        (maya, "stance", "tally", {"prompt": "budget"}),
        (mod, "stance", "export", {"prompt": "budget"}),
        (mod, "prompt", "close", {"prompt": "budget"}),
        (mod, "prompt", "list", {}),
    ]:
        said = _everything_said(await here.slash(who, command, sub, **options))
        assert SECRET_TITLE not in said and "hush" not in said, (command, sub, said)
        if command != "prompt" or sub != "list":
            assert "Unknown prompt 'budget'. Known prompts: alliance, defense." in said, (command, sub, said)
    assert await repo_of(here).prompts.prompt_state("budget", guild.id) == "open"
