"""Learning from the server, end to end on the loopback Discord: a moderator adds a prompt, members reply and press
the stance buttons, the bot trains the prompt's head in the background, switches to it when it is better,
``/prompt info`` shows it, new replies get its version, and nothing stalls or is lost.

The prompt is one the general model never trained on (a held-out prompt of its data), so the test runs on
whichever base serves a new prompt: the similarity model today, the general model once one is shipped.
"""

from __future__ import annotations

import random
from typing import Any

from bot.assets import data_dir
from bot.core.datasets import load_jsonl
from bot.core.prompts import UNCLEAR, load_prompt
from bot.pipeline.learning import Trained
from tests.e2e.conftest import World, bot_post_in, post_prompt, repo_of, text_of, wait_event

PROMPT = data_dir() / "general" / "phones_in_school"
NAME = "phones"


def _form() -> dict[str, str]:
    prompt = load_prompt(PROMPT.with_suffix(".toml"))
    labels = "\n".join(f"{label.name}: {label.description} | {'; '.join(label.examples)}" for label in prompt.labels)
    return {"title": prompt.title[:100], "question": prompt.question, "context": prompt.summary[:1000],
            "labels": labels, "source": ""}  # fmt: skip


def _embed_text(result: Any) -> str:
    embeds = list(result.embeds or []) + [e for f in getattr(result, "followups", []) for e in f.get("embeds", [])]
    return " ".join(
        " ".join(
            [e.get("title") or "", e.get("description") or ""]
            + [f"{f['name']} {f['value']}" for f in e.get("fields", [])]
        )
        for e in embeds
    )


async def test_a_new_prompt_learns_from_its_members_and_serves_the_better_model(world: World) -> None:
    services = world.runtime.services
    policy = services.settings.learning
    modlog = world.server.create_channel(world.guild, "mod-log")
    await world.slash(world.moderator, "audit", "channel", channel=modlog)
    opened = await world.slash(world.moderator, "prompt", "add", name=NAME)
    assert opened.modal is not None, text_of(opened)
    added = await world.server.submit_modal(
        world.guild, world.channel.id, world.moderator, "stancebot:prompt-add", _form()
    )
    assert f"Added **{NAME}**" in text_of(added), text_of(added)
    thread = await post_prompt(world, NAME)
    post = await world.bot.post_for_thread(thread)
    assert post is not None
    base_version = services.stance.version(NAME, world.guild.id)

    examples = [ex for ex in load_jsonl(PROMPT.with_suffix(".jsonl")) if ex.label != UNCLEAR]
    random.Random(13).shuffle(examples)
    probe = world.runtime.observability.probe if world.runtime.observability else None
    assert probe is not None
    probe.reset()

    trainings: list[Trained] = []
    sent = 0

    async def member_labels(count: int) -> None:
        nonlocal sent
        for ex in examples[sent : sent + count]:
            name = f"m{sent}"
            outcome = await world.reply(thread, name, ex.text)
            assert outcome.model_version == services.stance.version(NAME, world.guild.id)
            pressed = await world.server.click(
                world.guild, world.channel.id, world.member(name), post.message_id, f"stancebot:declare:{ex.label}"
            )
            assert ex.label in text_of(pressed), text_of(pressed)
            sent += 1

    # one short of the threshold: nothing trains
    await member_labels(policy.min_labels - 1)
    assert services.learning is not None and services.learning.trainings == 0
    # the label that reaches it starts a training in the background; more labels every step until a head wins
    trained = await wait_event(world, "prompt_trained", lambda t: t.slug == NAME, member_labels(1))
    trainings.append(trained)
    while not trained.outcome.switch and sent + policy.retrain_step <= len(examples) - 5:
        trained = await wait_event(
            world, "prompt_trained", lambda t: t.slug == NAME, member_labels(policy.retrain_step)
        )
        trainings.append(trained)
    for t in trainings:
        f = t.outcome.figures
        assert t.outcome.switch == f["better"] and t.record.active == t.outcome.switch
        assert f["n"] == t.record.n_labels and f["sources"]["declared"] == f["n"]
    assert [t.record.n_labels for t in trainings] == [
        policy.min_labels + i * policy.retrain_step for i in range(len(trainings))
    ]
    assert trained.outcome.switch, f"no head beat the base: {[t.outcome.summary for t in trainings]}"
    await services.learning.idle()
    logged = await bot_post_in(world, modlog.id, 0)  # the mod-log channel hears of each training first
    assert logged["embeds"][0]["title"].startswith(f"{trainings[0].audit.action} {NAME} ({trainings[0].record.version}")

    # the event loop never stalled while the replies, the buttons and the trainings ran
    assert probe.samples > 20 and probe.max_lag < 0.1, probe.max_lag

    new_version = services.stance.version(NAME, world.guild.id)
    assert new_version == f"{base_version}+{trained.record.version}"
    info = await world.slash(world.moderator, "prompt", "info", prompt=NAME)
    shown = _embed_text(info)
    assert trained.record.version in shown and new_version in shown, shown
    f = trained.outcome.figures
    assert f"**{f['head_macro_f1']:.3f}** (head) vs **{f['base_macro_f1']:.3f}** (base)" in shown, shown
    assert f"Labelled replies {sent} ({sent} declared)" in shown, shown

    # new replies get the new model; stances stored before keep theirs
    outcome = await world.reply(thread, "late", examples[sent].text)
    assert outcome.model_version == new_version
    stored = await repo_of(world).tallies.current_stances(post)
    versions = [s.model_version for s in stored.values()]
    assert versions.count(new_version) == 1 and versions.count(base_version) == sent

    # the moderator re-classifies the open replies with it
    redone = await world.slash(world.moderator, "prompt", "reclassify", prompt=NAME)
    assert f"Re-classified {sent + 1} open replies of **{NAME}** with `{new_version}`" in text_of(redone), text_of(
        redone
    )
    stored = await repo_of(world).tallies.current_stances(post)
    assert {s.model_version for s in stored.values()} == {new_version}

    # more labels, the last a moderator's relabel: the next training must also beat the serving head on the labels
    # that head never saw, or the serving head stays
    await member_labels(policy.retrain_step - 1)
    relabel = world.slash(
        world.moderator, "stance", "relabel", message=str(outcome.reply.message_id), label=examples[sent].label
    )
    second = await wait_event(world, "prompt_trained", lambda t: t.slug == NAME, relabel)
    await services.learning.idle()
    f = second.outcome.figures
    assert f["n"] == trained.record.n_labels + policy.retrain_step and f["sources"]["relabel"] == 1
    assert f["n_fresh"] == policy.retrain_step and f["current_fresh_macro_f1"] is not None
    better = f["head_macro_f1"] > f["base_macro_f1"] and f["head_fresh_macro_f1"] > f["current_fresh_macro_f1"]
    assert second.outcome.switch == better
    serving = second.record if better else trained.record
    assert services.stance.version(NAME, world.guild.id) == f"{base_version}+{serving.version}"
    trainings.append(second)
    sent += 1  # the relabelled reply

    # nothing lost: every reply has its stance, every button press is declared, the audit log has the switch
    stored = await repo_of(world).tallies.current_stances(post)
    assert len(stored) == sent
    standings = (await repo_of(world).tallies.standings(services.catalog.get(NAME, world.guild.id), world.guild.id))[1]
    assert sum(standings.declared.values()) == sent - 1
    audit = await repo_of(world).moderation.audit_recent(world.guild.id, limit=25)
    switches = [a.detail or "" for a in audit if a.action == "model_switch"]
    assert sorted(switches) == sorted(
        f"{t.record.version}: {t.outcome.summary}"[:200] for t in trainings if t.outcome.switch
    )
    assert len([a for a in audit if a.action == "model_kept"]) == sum(not t.outcome.switch for t in trainings)

    # a seed prompt keeps its own trained model; any member may ask
    seed = _embed_text(await world.slash(world.member("m0"), "prompt", "info", prompt="alliance"))
    assert "does not learn from the server" in seed and services.stance.version("alliance", world.guild.id) in seed
