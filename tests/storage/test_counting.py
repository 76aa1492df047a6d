"""Property tests of the counting rules on real databases.

For any sequence of create / edit / delete / relabel / declare / opt-out / opt-in / forget events, under every
counting configuration:

* the tally (a ``GROUP BY`` over the ``counted`` flags the repository maintains on write) equals a recount from
  the rows stored (replies, their current stances, declared stances, opt-outs);
* both equal an independent model of the events written from the rules in the issue;
* no count is negative, and in ``member`` mode each member counts at most once.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.core.counting import CountingRules
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.stance import StanceResult
from bot.storage.db import make_sessionmaker
from bot.storage.models import DeclaredStance, OptOut, Reply, Stance
from bot.storage.records import NotAReplyError, OptedOutError, PostInfo
from bot.storage.repository import Repository
from tests.conftest import add_reply, save_stance

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LABELS = ("unfair", "fair", "mutual_benefit", UNCLEAR)
STANCES = LABELS[:-1]
MEMBERS = 3
_ids = itertools.count(1)

members = st.integers(0, MEMBERS - 1)
replies = st.integers(0, 50)  # an index into the replies created so far (taken modulo their number)
labels = st.sampled_from(LABELS)
events = st.one_of(
    *[st.tuples(st.just("create"), members, labels)] * 4,  # creates are four times as likely as the rest
    st.tuples(st.just("edit"), replies, labels),
    st.tuples(st.just("delete"), replies),
    st.tuples(st.just("relabel"), replies, labels),
    st.tuples(st.just("declare"), members, st.sampled_from(STANCES)),
    st.tuples(st.just("opt_out"), members),
    st.tuples(st.just("opt_in"), members),
    st.tuples(st.just("forget"), members),
)
rules = st.builds(CountingRules, st.sampled_from(["member", "reply"]), st.booleans())


@dataclass
class ModelReply:
    """The test's own record of a reply."""

    message_id: int
    author: int
    seq: int
    label: str
    deleted: bool = False


@dataclass
class Model:
    """An independent model of the events: what the rules say the tally must be."""

    rules: CountingRules
    replies: list[ModelReply] = field(default_factory=list)
    declared: dict[int, str] = field(default_factory=dict)
    opted: set[int] = field(default_factory=set)

    def tally(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for member in {r.author for r in self.replies} | set(self.declared):
            if member in self.opted:
                continue
            if member in self.declared and self.rules.declared_overrides:
                counts[self.declared[member]] += 1
                continue
            live = sorted((r for r in self.replies if r.author == member and not r.deleted), key=lambda r: -r.seq)
            if self.rules.mode == "reply":
                counts.update(r.label for r in live)
            elif live:
                counts[next((r.label for r in live if r.label != UNCLEAR), live[0].label)] += 1
        return counts


async def _stored_recount(repo: Repository, prompt_row_id: int, guild_id: int) -> tuple[Counter[str], Counter[int]]:
    """Recount from the stored rows with the rules (not from the ``counted`` flags); also who is counted."""
    async with repo.sessions() as s:
        rows = (
            await s.execute(
                select(Reply.author_id, Reply.created_at, Reply.message_id, Stance.label)
                .join(Stance, Stance.reply_id == Reply.id)
                .where(
                    Reply.prompt_id == prompt_row_id,
                    Reply.guild_id == guild_id,
                    Reply.deleted_at.is_(None),
                    Stance.is_current,
                )
            )
        ).all()
        declared = {
            d.author_id: d.label
            for d in await s.scalars(
                select(DeclaredStance).where(
                    DeclaredStance.prompt_id == prompt_row_id, DeclaredStance.guild_id == guild_id
                )
            )
        }
        opted = {o.user_id for o in await s.scalars(select(OptOut).where(OptOut.guild_id == guild_id))}
        flagged = Counter(
            a
            for (a,) in await s.execute(
                select(Stance.author_id).where(
                    Stance.prompt_id == prompt_row_id, Stance.guild_id == guild_id, Stance.counted
                )
            )
        )
        flagged.update(
            a
            for (a,) in await s.execute(
                select(DeclaredStance.author_id).where(
                    DeclaredStance.prompt_id == prompt_row_id,
                    DeclaredStance.guild_id == guild_id,
                    DeclaredStance.counted,
                )
            )
        )
    model = Model(repo.rules, declared=declared, opted=opted)
    for author, written, mid, label in rows:
        model.replies.append(ModelReply(mid, author, int(written.timestamp() * 1000) * 10**20 + mid, label))
    return model.tally(), flagged


async def _run(repo: Repository, catalog: PromptCatalog, ops: list[tuple[Any, ...]]) -> None:
    guild = next(_ids) * 1000
    await repo.guilds.ensure_guild(guild, "g")
    prompt = catalog.get("alliance")
    prompt_row = await repo.prompts.sync_prompt(prompt)
    post: PostInfo = await repo.prompts.record_post(
        "alliance", guild_id=guild, channel_id=guild + 1, message_id=guild + 2, thread_id=guild + 3, posted_by=None
    )
    model = Model(repo.rules)
    created: list[ModelReply] = []
    for seq, op in enumerate(ops):
        kind = op[0]
        if kind == "create":
            member, label = guild + 10 + op[1], op[2]
            mid = guild * 1000 + seq
            ref = await add_reply(
                repo, post, message_id=mid, author_id=member, content=f"r{mid}", created_at=T0 + timedelta(seconds=seq)
            )
            assert (ref is None) == (member in model.opted)
            if ref is not None:
                await save_stance(repo, ref, StanceResult(label, 0.9), model_version="test")
                created.append(ModelReply(mid, member, seq, label))
                model.replies.append(created[-1])
        elif kind in ("edit", "delete", "relabel") and created:
            reply = created[op[1] % len(created)]
            if kind == "edit":
                ref = await repo.writes.edit_reply(reply.message_id, f"edit {seq}", T0 + timedelta(seconds=seq))
                assert (ref is None) == (reply.deleted or reply.author in model.opted)
                if ref is not None:
                    await save_stance(repo, ref, StanceResult(op[2], 0.8), model_version="test")
                    reply.label = op[2]
            elif kind == "delete":
                assert await repo.writes.delete_reply(reply.message_id) == (not reply.deleted)
                reply.deleted = True
            elif reply.deleted:
                with pytest.raises(NotAReplyError):
                    await repo.moderation.relabel(reply.message_id, guild_id=guild, label=op[2], actor_id=1)
            else:
                record = await repo.moderation.relabel(reply.message_id, guild_id=guild, label=op[2], actor_id=1)
                assert record.to_label == op[2]
                reply.label = op[2]
        elif kind == "declare":
            member, label = guild + 10 + op[1], op[2]
            if member in model.opted:
                with pytest.raises(OptedOutError):
                    await repo.writes.declare(post.message_id, author_id=member, label=label)
            else:
                result = await repo.writes.declare(post.message_id, author_id=member, label=label)
                if model.declared.get(member) == label:
                    assert result.current is None
                    del model.declared[member]
                else:
                    assert result.current == label
                    model.declared[member] = label
        elif kind == "opt_out":
            member = guild + 10 + op[1]
            assert await repo.privacy.opt_out(guild, member) == (member not in model.opted)
            model.opted.add(member)
            model.declared.pop(member, None)
        elif kind == "opt_in":
            member = guild + 10 + op[1]
            assert await repo.privacy.opt_in(guild, member) == (member in model.opted)
            model.opted.discard(member)
        elif kind == "forget":
            member = guild + 10 + op[1]
            await repo.privacy.forget_member(member)
            model.replies = [r for r in model.replies if r.author != member]
            created = [r for r in created if r.author != member]
            model.declared.pop(member, None)

        tally = await repo.tallies.tally(prompt, guild)
        counts = Counter({k: v for k, v in tally.counts.items() if v})
        assert all(n >= 0 for n in tally.counts.values())
        recount, flagged = await _stored_recount(repo, prompt_row, guild)
        assert counts == recount, (op, counts, recount)
        assert counts == model.tally(), (op, counts, model.tally())
        if repo.rules.mode == "member":
            assert all(n == 1 for n in flagged.values()), flagged


@example(ops=[("create", 0, "fair"), ("create", 0, UNCLEAR)], counting=CountingRules("member", True))
@example(ops=[("create", 0, "fair"), ("create", 0, "unfair"), ("delete", 1)], counting=CountingRules("member", True))
@example(ops=[("create", 0, "fair"), ("declare", 0, "unfair"), ("opt_out", 0), ("opt_in", 0)], counting=CountingRules())
@example(ops=[("create", 0, "fair"), ("create", 0, "fair"), ("relabel", 0, UNCLEAR)], counting=CountingRules("reply"))
@example(ops=[("create", 0, "fair"), ("declare", 0, "unfair"), ("forget", 0)], counting=CountingRules("member", False))
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(events, min_size=1, max_size=25), counting=rules)
async def test_tally_equals_recount_for_any_event_sequence(
    engine: AsyncEngine, catalog: PromptCatalog, ops: list[tuple[Any, ...]], counting: CountingRules
) -> None:
    repo = Repository(
        make_sessionmaker(engine), count_mode=counting.mode, declared_overrides=counting.declared_overrides
    )
    await _run(repo, catalog, ops)
