"""Moderation and privacy storage on real databases: corrections and the audit log, the review queue, declared
stances, prompt management, export, forget-me, opt-out and the retention purge."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.errors import LabelError, PromptError
from bot.core.prompts import PromptCatalog, prompt_from_dict
from bot.core.stance import StanceResult
from bot.storage.db import make_sessionmaker
from bot.storage.records import NotAReplyError, OptedOutError, PostInfo, PromptClosedError, ReviewDoneError
from bot.storage.repository import Repository
from tests.conftest import add_reply, save_stance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
G = 1
MOD = 99


async def _post(repo: Repository, catalog: PromptCatalog, guild_id: int = G) -> PostInfo:
    await repo.guilds.ensure_guild(guild_id, "Test guild")
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    return await repo.prompts.record_post(
        "alliance", guild_id=guild_id, channel_id=10, message_id=100 + guild_id, thread_id=200 + guild_id, posted_by=MOD
    )


async def _reply(
    repo: Repository, post: PostInfo, mid: int, author: int, label: str, *, confidence: float = 0.9, minutes: int = 0
) -> int:
    ref = await add_reply(
        repo, post, message_id=mid, author_id=author, content=f"reply {mid}", created_at=T0 + timedelta(minutes=minutes)
    )
    assert ref is not None
    await save_stance(repo, ref, StanceResult(label, confidence), model_version="test")
    return ref.id


async def _counts(repo: Repository, catalog: PromptCatalog, guild_id: int = G) -> dict[str, int]:
    tally = await repo.tallies.tally(catalog.get("alliance"), guild_id)
    return {k: v for k, v in tally.counts.items() if v}


async def test_relabel_records_audit_and_refuses_what_it_cannot(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    record = await repo.moderation.relabel(1, guild_id=G, label="fair", actor_id=MOD)
    assert (record.action, record.from_label, record.to_label, record.actor_id, record.subject_id) == (
        "relabel",
        "unfair",
        "fair",
        MOD,
        7,
    )
    assert record.prompt_slug == "alliance" and record.channel_id == post.thread_id
    assert await _counts(repo, catalog) == {"fair": 1}
    stored = await repo.tallies.stance_of(1)
    assert stored is not None and stored.source == "moderator" and stored.confidence == 1.0
    assert [r.id for r in await repo.moderation.audit_recent(G)] == [record.id]

    with pytest.raises(LabelError, match="use one of unfair, fair, mutual_benefit, unclear"):
        await repo.moderation.relabel(1, guild_id=G, label="maybe", actor_id=MOD)
    with pytest.raises(NotAReplyError, match="not a reply"):
        await repo.moderation.relabel(1, guild_id=2, label="fair", actor_id=MOD)  # another guild's moderator
    with pytest.raises(NotAReplyError):
        await repo.moderation.relabel(12345, guild_id=G, label="fair", actor_id=MOD)
    await repo.writes.delete_reply(1)
    with pytest.raises(NotAReplyError, match="deleted"):
        await repo.moderation.relabel(1, guild_id=G, label="fair", actor_id=MOD)
    assert await repo.moderation.corrections() == []  # deleted replies are no training data


async def test_corrections_are_training_data(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    await _reply(repo, post, 2, author=8, label="fair")
    await repo.moderation.relabel(2, guild_id=G, label="mutual_benefit", actor_id=MOD)
    [correction] = await repo.moderation.corrections("alliance")
    assert correction.to_json() == {
        "text": "reply 2",
        "label": "mutual_benefit",
        "prompt": "alliance",
        "source": "moderator",
    }
    assert await repo.moderation.corrections("defense") == []


async def test_review_queue(engine: AsyncEngine, catalog: PromptCatalog) -> None:
    repo = Repository(make_sessionmaker(engine), review_below=0.6)
    post = await _post(repo, catalog)
    sure = await _reply(repo, post, 1, author=7, label="unfair", confidence=0.9)
    unsure = await _reply(repo, post, 2, author=8, label="fair", confidence=0.55)
    gated = await add_reply(repo, post, message_id=3, author_id=9, content="hmm", created_at=T0)
    assert gated is not None
    await save_stance(repo, gated, StanceResult("unclear", 0.3, "low confidence (fair 0.30)"), model_version="t")
    emoji = await add_reply(repo, post, message_id=4, author_id=10, content="🔥", created_at=T0)
    assert emoji is not None
    await save_stance(repo, emoji, StanceResult("unclear", 1.0, "no words (emoji or symbols only)"), model_version="t")

    assert await repo.moderation.open_review_for_reply(sure) is None
    assert await repo.moderation.review_queue_size(G) == 2
    first = await repo.moderation.next_review(G)
    assert first is not None and first.reply_id == unsure and first.model_label == "fair"
    assert first.labels == ("unfair", "fair", "mutual_benefit", "unclear") and first.text == "reply 2"

    record = await repo.moderation.resolve_review(first.id, guild_id=G, label="mutual_benefit", actor_id=MOD)
    assert (record.action, record.from_label, record.to_label) == ("review", "fair", "mutual_benefit")
    with pytest.raises(ReviewDoneError, match=f"already handled by <@{MOD}>"):
        await repo.moderation.resolve_review(first.id, guild_id=G, label="fair", actor_id=MOD)
    with pytest.raises(ReviewDoneError):
        await repo.moderation.resolve_review(first.id, guild_id=2, label="fair", actor_id=MOD)  # another guild

    second = await repo.moderation.next_review(G)
    assert second is not None and second.model_label == "fair"  # the runner-up named in the reason
    await repo.moderation.set_review_message(second.id, 555, 666)
    await repo.moderation.skip_review(second.id, guild_id=G, actor_id=MOD)
    assert await repo.moderation.next_review(G) is None
    info = await repo.moderation.review_item(second.id)
    assert info is not None and (info.status, info.review_channel_id, info.review_message_id) == ("skipped", 555, 666)

    # an edit that the model is sure about closes the review; a delete does too
    third = await _reply(repo, post, 5, author=11, label="fair", confidence=0.5)
    assert await repo.moderation.open_review_for_reply(third) is not None
    edited = await repo.writes.edit_reply(5, "edited", T0)
    assert edited is not None
    await save_stance(repo, edited, StanceResult("fair", 0.95), model_version="t")
    assert await repo.moderation.open_review_for_reply(third) is None
    fourth = await _reply(repo, post, 6, author=12, label="fair", confidence=0.5)
    await repo.writes.delete_reply(6)
    assert await repo.moderation.open_review_for_reply(fourth) is None
    assert await repo.moderation.review_queue_size(G) == 0


async def test_declared_stances_and_comparison(engine: AsyncEngine, catalog: PromptCatalog) -> None:
    for overrides in (True, False):
        repo = Repository(make_sessionmaker(engine), declared_overrides=overrides)
        guild = 10 if overrides else 20
        post = await _post(repo, catalog, guild)
        prompt = catalog.get("alliance")
        await _reply(repo, post, guild * 10 + 1, author=7, label="unfair")
        await _reply(repo, post, guild * 10 + 2, author=8, label="fair")
        result = await repo.writes.declare(post.message_id, author_id=7, label="fair")
        assert (result.previous, result.current, result.counted) == (None, "fair", overrides)
        await repo.writes.declare(post.message_id, author_id=8, label="fair")
        await repo.writes.declare(post.message_id, author_id=9, label="mutual_benefit")  # declared, never replied
        counts = await _counts(repo, catalog, guild)
        if overrides:
            assert counts == {"fair": 2, "mutual_benefit": 1}
        else:
            assert counts == {"unfair": 1, "fair": 1}
        comparison = (await repo.tallies.standings(prompt, guild))[1]
        assert comparison.model == {"unfair": 1, "fair": 1}
        assert comparison.declared == {"fair": 2, "mutual_benefit": 1}
        assert (comparison.both, comparison.agree, comparison.agreement) == (2, 1, 0.5)

        with pytest.raises(LabelError):
            await repo.writes.declare(post.message_id, author_id=7, label="unclear")
        with pytest.raises(PromptError):
            await repo.writes.declare(999_999, author_id=7, label="fair")
        await repo.prompts.set_prompt_closed("alliance", guild, closed=True, actor_id=MOD)
        with pytest.raises(PromptClosedError):
            await repo.writes.declare(post.message_id, author_id=7, label="unfair")


async def test_prompt_management(repo: Repository, catalog: PromptCatalog) -> None:
    await repo.prompts.sync_prompt(catalog.get("alliance"))
    assert await repo.prompts.prompt_state("alliance", G) == "unposted"
    with pytest.raises(PromptError, match="has not been posted"):
        await repo.prompts.set_prompt_closed("alliance", G, closed=True, actor_id=MOD)
    data = catalog.get("alliance").to_dict() | {"id": "tariffs"}
    tariffs = prompt_from_dict(data)
    await repo.prompts.add_guild_prompt(tariffs, G, actor_id=MOD)
    with pytest.raises(PromptError, match="already exists"):
        await repo.prompts.add_guild_prompt(tariffs, G, actor_id=MOD)  # a guild names each of its prompts once
    await repo.prompts.add_guild_prompt(tariffs, 3, actor_id=MOD)  # another guild may use the same name
    with pytest.raises(PromptError, match="already exists"):
        await repo.prompts.add_guild_prompt(catalog.get("alliance"), G, actor_id=MOD)
    assert [(p.id, g) for p, g in await repo.prompts.guild_added_prompts()] == [("tariffs", G), ("tariffs", 3)]

    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    assert await repo.prompts.latest_open_post("alliance", G) == post
    [closed] = await repo.prompts.set_prompt_closed("alliance", G, closed=True, actor_id=MOD)
    assert closed.closed and await repo.prompts.prompt_state("alliance", G) == "closed"
    assert await repo.prompts.latest_open_post("alliance", G) is None
    assert await repo.writes.edit_reply(1, "changed", T0) is None  # a closed prompt no longer counts edits
    with pytest.raises(PromptError, match="already closed"):
        await repo.prompts.set_prompt_closed("alliance", G, closed=True, actor_id=MOD)
    overview = {p.slug: p for p in await repo.prompts.prompt_overview(G)}
    assert (overview["alliance"].state, overview["alliance"].posts, overview["alliance"].counted) == ("closed", 1, 1)
    assert overview["tariffs"].guild_owned and overview["tariffs"].state == "unposted"
    assert "tariffs" not in {p.slug for p in await repo.prompts.prompt_overview(2)}
    [reopened] = await repo.prompts.set_prompt_closed("alliance", G, closed=False, actor_id=MOD)
    assert not reopened.closed
    actions = [r.action for r in await repo.moderation.audit_recent(G)]
    assert actions == ["prompt_reopen", "prompt_close", "prompt_add"]


async def test_opt_out_and_in(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    await repo.writes.declare(post.message_id, author_id=7, label="fair")
    assert await repo.privacy.opt_out(G, 7)
    assert not await repo.privacy.opt_out(G, 7)
    assert await _counts(repo, catalog) == {}
    assert await add_reply(repo, post, message_id=2, author_id=7, content="x", created_at=T0) is None
    assert await repo.writes.edit_reply(1, "changed", T0) is None
    with pytest.raises(OptedOutError):
        await repo.writes.declare(post.message_id, author_id=7, label="fair")
    assert await repo.privacy.export_rows("alliance", G) == []
    assert await repo.privacy.opt_in(G, 7)
    assert not await repo.privacy.opt_in(G, 7)
    assert await _counts(repo, catalog) == {"unfair": 1}  # the declaration went with the opt-out


async def test_forget_member(repo: Repository, catalog: PromptCatalog) -> None:
    a, b = await _post(repo, catalog, 1), await _post(repo, catalog, 2)
    await _reply(repo, a, 1, author=7, label="unfair")
    await _reply(repo, b, 2, author=7, label="fair")
    await _reply(repo, a, 3, author=8, label="fair")
    await repo.moderation.relabel(1, guild_id=1, label="fair", actor_id=MOD)
    await repo.moderation.relabel(3, guild_id=1, label="unfair", actor_id=7)  # 7 is also a moderator
    await repo.writes.declare(a.message_id, author_id=7, label="mutual_benefit")
    await repo.privacy.opt_out(2, 7)

    report = await repo.privacy.forget_member(7)
    assert (report.replies, report.stances, report.declared, report.guild_ids) == (2, 3, 1, (1, 2))
    assert await _counts(repo, catalog, 1) == {"unfair": 1}
    assert await _counts(repo, catalog, 2) == {}
    assert [r.author_id for r in await repo.privacy.export_rows("alliance", 1)] == [8]
    data = await repo.privacy.member_data(7)
    assert data["replies"] == [] and data["declared_stances"] == [] and data["audit_entries_about_you"] == []
    assert data["opted_out_in_guilds"] == ["2"]  # the opt-out stays, so 7 keeps not being counted there
    assert data["moderator_actions_by_you"] == 0
    for guild in (1, 2):
        entries = await repo.moderation.audit_recent(guild, 50)
        assert all(7 not in (e.actor_id, e.subject_id) for e in entries)
        assert entries[0].action == "forget" and entries[0].actor_id is None
    [relabel_of_8] = [
        e for e in await repo.moderation.audit_recent(1, 50) if e.action == "relabel" and e.subject_id == 8
    ]
    assert relabel_of_8.actor_id is None and relabel_of_8.to_label == "unfair"


async def test_member_data_and_export(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    await _reply(repo, post, 1, author=7, label="unfair")
    await repo.moderation.relabel(1, guild_id=G, label="fair", actor_id=MOD)
    await _reply(repo, post, 2, author=8, label="fair", minutes=1)
    await repo.writes.delete_reply(2)
    data = await repo.privacy.member_data(7)
    [reply] = data["replies"]
    assert reply["text"] == "reply 1" and reply["prompt"] == "alliance" and reply["message_id"] == "1"
    assert [(s["label"], s["set_by"], s["current"]) for s in reply["stances"]] == [
        ("unfair", "model", False),
        ("fair", "moderator", True),
    ]
    [entry] = data["audit_entries_about_you"]
    assert (entry["action"], entry["from"], entry["to"]) == ("relabel", "unfair", "fair")
    [row] = await repo.privacy.export_rows("alliance", G)
    assert (row.message_id, row.label, row.source, row.counted) == (1, "fair", "moderator", True)
    with pytest.raises(PromptError):
        await repo.privacy.export_rows("nope", G)
    json.dumps(data, default=str)


async def test_retention_purge(repo: Repository, catalog: PromptCatalog) -> None:
    post = await _post(repo, catalog)
    old = await _reply(repo, post, 1, author=7, label="unfair", minutes=0)
    await _reply(repo, post, 2, author=8, label="fair", minutes=60 * 24 * 10)
    pending = await add_reply(repo, post, message_id=3, author_id=9, content="not yet classified", created_at=T0)
    assert pending is not None
    repo.review_below = 1.0
    unsure = await _reply(repo, post, 4, author=10, label="fair", minutes=5)
    await repo.moderation.set_review_message((await repo.moderation.open_review_for_reply(unsure)).id, 77, 88)  # type: ignore[union-attr]

    report = await repo.privacy.purge_text(T0 + timedelta(days=5), limit=1)
    assert report.replies == 1
    report = await repo.privacy.purge_text(T0 + timedelta(days=5))
    assert report.replies == 1 and report.review_messages == ((77, 88),)
    rows = {r.message_id: r for r in await repo.privacy.export_rows("alliance", G)}
    assert rows[1].text is None and rows[4].text is None
    assert rows[2].text == "reply 2" and rows[3].text == "not yet classified"
    assert await _counts(repo, catalog) == {"unfair": 1, "fair": 2}  # stances and counts stay
    assert (await repo.privacy.purge_text(T0 + timedelta(days=5))).replies == 0
    assert old and await repo.moderation.review_queue_size(G) == 0


async def test_guild_channels(repo: Repository) -> None:
    config = await repo.guilds.guild_config(G)
    assert (config.mod_log_channel_id, config.review_channel_id) == (None, None)
    await repo.guilds.set_guild_channel(G, kind="mod_log", channel_id=5, actor_id=MOD)
    config = await repo.guilds.set_guild_channel(G, kind="review", channel_id=6, actor_id=MOD)
    assert (config.mod_log_channel_id, config.review_channel_id) == (5, 6)
    config = await repo.guilds.set_guild_channel(G, kind="mod_log", channel_id=None, actor_id=MOD)
    assert (await repo.guilds.guild_config(G)).mod_log_channel_id is None
