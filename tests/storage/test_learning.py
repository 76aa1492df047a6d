"""Learning-from-the-server storage on real databases (SQLite and PostgreSQL): a prompt's labelled replies per
guild, the prompt-head table, and re-classifying open replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from bot.core.adapt import PromptHead
from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.records import PostInfo
from bot.storage.repository import Repository
from tests.conftest import add_reply, save_stance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
G, OTHER, MOD = 1, 2, 99
LABELS = ("unfair", "fair", "mutual_benefit", "unclear")


async def _post(repo: Repository, catalog: PromptCatalog, guild_id: int = G) -> PostInfo:
    await repo.guilds.ensure_guild(guild_id, "Test guild")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    return await repo.prompts.record_post(
        "alliance", guild_id=guild_id, channel_id=10, message_id=100 + guild_id, thread_id=200 + guild_id, posted_by=MOD
    )


async def _reply(
    repo: Repository, post: PostInfo, mid: int, author: int, label: str = "unfair", *, confidence: float = 0.9
) -> int:
    ref = await add_reply(
        repo, post, message_id=mid, author_id=author, content=f"reply {mid}", created_at=T0 + timedelta(minutes=mid)
    )
    assert ref is not None
    await save_stance(repo, ref, StanceResult(label, confidence), model_version="similarity:test")
    return ref.id


def _head(n: int, seed: float = 0.0) -> PromptHead:
    weights = np.full((4, 6), seed)
    return PromptHead(LABELS, weights, np.zeros(4), "similarity:test", n, {"n": n, "head_macro_f1": 0.8})


async def test_labelled_replies_come_from_declarations_relabels_and_reviews_per_guild(
    repo: Repository, catalog: PromptCatalog
) -> None:
    post = await _post(repo, catalog)
    other = await _post(repo, catalog, OTHER)
    await _reply(repo, post, 1, author=7)
    latest_of_7 = await _reply(repo, post, 2, author=7)
    relabelled = await _reply(repo, post, 3, author=8)
    repo.review_below = 0.95
    reviewed = await _reply(repo, post, 4, author=9, confidence=0.5)
    opted = await _reply(repo, post, 5, author=10)
    deleted = await _reply(repo, post, 6, author=11)
    await _reply(repo, other, 7, author=7)

    await repo.writes.declare(post.message_id, author_id=7, label="fair")  # labels 7's latest reply (2)
    await repo.writes.declare(post.message_id, author_id=8, label="fair")  # a moderator's label wins (3)
    await repo.writes.declare(post.message_id, author_id=10, label="fair")
    await repo.writes.declare(post.message_id, author_id=11, label="fair")
    await repo.writes.declare(post.message_id, author_id=12, label="fair")  # declared, never replied: no text
    await repo.writes.declare(other.message_id, author_id=7, label="unfair")  # the other guild's
    await repo.moderation.relabel(3, guild_id=G, label="mutual_benefit", actor_id=MOD)
    item = await repo.moderation.next_review(G)
    assert item is not None and item.reply_id == reviewed
    await repo.moderation.resolve_review(item.id, guild_id=G, label="unclear", actor_id=MOD)
    await repo.privacy.opt_out(G, 10)
    await repo.writes.delete_reply(6)

    labelled = await repo.learning.labelled_replies(G, "alliance")
    got = {r.reply_id: (r.text, r.label, r.source) for r in labelled}
    assert got == {
        latest_of_7: ("reply 2", "fair", "declared"),
        relabelled: ("reply 3", "mutual_benefit", "relabel"),
        reviewed: ("reply 4", "unclear", "review"),
    }
    assert opted not in got and deleted not in got
    assert [r.labelled_at for r in labelled] == sorted(r.labelled_at for r in labelled)
    [theirs] = await repo.learning.labelled_replies(OTHER, "alliance")
    assert (theirs.text, theirs.label, theirs.source) == ("reply 7", "unfair", "declared")


async def test_the_head_table_keeps_every_training_and_one_active_head_per_guild(
    repo: Repository, catalog: PromptCatalog
) -> None:
    await _post(repo, catalog)
    await _post(repo, catalog, OTHER)
    assert await repo.learning.latest_head(G, "alliance") is None

    first, audit_first = await repo.learning.record_training(
        G, "alliance", _head(30), seconds=0.4, switch=True, summary="x"
    )
    kept, _ = await repo.learning.record_training(G, "alliance", _head(50, 1.0), seconds=0.5, switch=False, summary="y")
    theirs, _ = await repo.learning.record_training(
        OTHER, "alliance", _head(40, 2.0), seconds=0.3, switch=True, summary="z"
    )
    assert (first.active, kept.active, theirs.active) == (True, False, True)
    assert (audit_first.action, audit_first.prompt_slug, audit_first.guild_id) == ("model_switch", "alliance", G)
    assert audit_first.detail == f"{_head(30).version}: x"
    latest = await repo.learning.latest_head(G, "alliance")
    assert latest is not None and latest.id == kept.id and latest.n_labels == 50
    active = await repo.learning.active_head(G, "alliance")
    assert active is not None and active.id == first.id
    again = active.prompt_head()
    assert again.version == _head(30).version and again.base_version == "similarity:test"
    assert active.figures == {"n": 30, "head_macro_f1": 0.8} and active.trained_at.tzinfo is not None

    switched, _ = await repo.learning.record_training(
        G, "alliance", _head(70, 3.0), seconds=0.6, switch=True, summary="w"
    )
    assert {h.id for h in await repo.learning.active_heads()} == {switched.id, theirs.id}
    audit = await repo.moderation.audit_recent(G, limit=10)
    actions = [a.action for a in audit if a.action.startswith("model_")]
    assert actions == ["model_switch", "model_kept", "model_switch"]
    assert audit[0].detail is not None and audit[0].detail.startswith(_head(70, 3.0).version)

    await repo.learning.deactivate(G, "alliance")
    assert await repo.learning.active_head(G, "alliance") is None
    assert {h.id for h in await repo.learning.active_heads()} == {theirs.id}


async def test_reclassify_replaces_model_stances_of_open_replies_only(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    a = await _reply(repo, post, 1, author=7, label="unfair")
    b = await _reply(repo, post, 2, author=8, label="fair")
    await _reply(repo, post, 3, author=9, label="fair")
    await repo.moderation.relabel(3, guild_id=G, label="unfair", actor_id=MOD)  # a moderator's stays

    todo = await repo.learning.open_model_replies(G, "alliance")
    assert todo == [(a, "reply 1"), (b, "reply 2")]
    await repo.writes.edit_reply(2, "reply 2, edited", T0 + timedelta(hours=1))  # changed since it was read
    done = await repo.learning.reclassify(
        G,
        "alliance",
        [(a, "reply 1", StanceResult("fair", 0.9)), (b, "reply 2", StanceResult("unfair", 0.9))],
        model_version="similarity:test+adapted:30:abcd",
    )
    assert (done.replies, done.changed) == (1, 1)
    logged = await repo.learning.record_reclassify(
        G, "alliance", done, model_version="similarity:test+adapted:30:abcd", actor_id=MOD
    )
    stances = {m: (s.label, s.model_version) for m, s in (await repo.tallies.current_stances(post)).items()}
    assert stances[1] == ("fair", "similarity:test+adapted:30:abcd")
    assert stances[3][1] == "moderator"
    tally = await repo.tallies.tally(catalog.get("alliance"), G)  # was unfair 2 (replies 1, 3), fair 1 (reply 2)
    assert (tally.counts["fair"], tally.counts["unfair"]) == (2, 1)
    [entry] = [e for e in await repo.moderation.audit_recent(G) if e.action == "reclassify"]
    assert (
        entry.id == logged.id
        and entry.actor_id == MOD
        and entry.detail == "1 replies, 1 changed, with similarity:test+adapted:30:abcd"
    )

    await repo.prompts.set_prompt_closed("alliance", G, closed=True, actor_id=MOD)
    assert await repo.learning.open_model_replies(G, "alliance") == []
