"""Reading stances: a reply's current stance, a prompt's tally and the model-vs-declared comparison."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select

from bot.core.counting import Comparison
from bot.core.prompts import UNCLEAR, Prompt
from bot.core.tally import Tally
from bot.storage.base import Store
from bot.storage.models import DeclaredStance, PromptRow, Reply, Stance
from bot.storage.prompts import prompt_row
from bot.storage.records import PostInfo, StoredStance


def _stored(st: Stance, message_id: int) -> StoredStance:
    return StoredStance(int(message_id), st.label, st.confidence, st.model_version, st.reason, st.source, st.counted)


class Tallies(Store):
    """Stances as they are counted; every method is one transaction."""

    async def reply_prompt(self, message_id: int, guild_id: int) -> str | None:
        """The prompt id of the stored reply with this message id in this guild (``None`` for a reply of another
        guild: its prompt is that guild's business)."""
        async with self.transaction() as s:
            return await s.scalar(
                select(PromptRow.slug)
                .join(Reply, Reply.prompt_id == PromptRow.id)
                .where(Reply.message_id == message_id, Reply.guild_id == guild_id)
            )

    async def stance_of(self, message_id: int) -> StoredStance | None:
        """The current stance of the reply with this message id."""
        async with self.transaction() as s:
            row = (
                await s.execute(
                    select(Stance, Reply.message_id)
                    .join(Reply, Reply.id == Stance.reply_id)
                    .where(Reply.message_id == message_id, Stance.is_current)
                )
            ).first()
            return None if row is None else _stored(row[0], row[1])

    async def current_stances(self, post: PostInfo) -> dict[int, StoredStance]:
        """The current stance of every reply in a post's thread, by message id."""
        async with self.transaction() as s:
            rows = await s.execute(
                select(Stance, Reply.message_id)
                .join(Reply, Reply.id == Stance.reply_id)
                .where(Reply.post_id == post.id, Stance.is_current)
            )
            return {int(mid): _stored(st, mid) for st, mid in rows}

    async def count_replies(self, message_ids: Sequence[int] | None = None) -> int:
        """How many reply rows exist (optionally among ``message_ids``)."""
        async with self.transaction() as s:
            q = select(func.count()).select_from(Reply)
            if message_ids is not None:
                q = q.where(Reply.message_id.in_(list(message_ids)))
            return int(await s.scalar(q) or 0)

    async def tally(self, prompt: Prompt, guild_id: int) -> Tally:
        """Counts per label of what counts (stances and declared stances), for one prompt in one guild."""
        return (await self.standings(prompt, guild_id))[0]

    async def standings(self, prompt: Prompt, guild_id: int) -> tuple[Tally, Comparison]:
        """The tally and the model-vs-declared comparison, from one read of the counted stances and the declared
        ones (what ``/stance tally`` and a digest show together)."""
        counts: dict[str, int] = defaultdict(int)  # the tally: counted stances and counted declared stances
        model: dict[str, int] = defaultdict(int)
        declared: dict[str, int] = defaultdict(int)
        both = agree = 0
        async with self.transaction() as s:
            prow = await prompt_row(s, prompt.id, guild_id)
            if prow is not None:
                stance_rows = await s.execute(
                    select(Stance.label, func.count())
                    .where(Stance.prompt_id == prow.id, Stance.guild_id == guild_id, Stance.counted)
                    .group_by(Stance.label)
                )
                for label, n in stance_rows:
                    counts[label] += int(n)
                    model[label] += int(n)
                decl_rows = await s.execute(
                    select(DeclaredStance.label, DeclaredStance.model_label, DeclaredStance.counted, func.count())
                    .where(DeclaredStance.prompt_id == prow.id, DeclaredStance.guild_id == guild_id)
                    .group_by(DeclaredStance.label, DeclaredStance.model_label, DeclaredStance.counted)
                )
                for label, model_label, counted, n in decl_rows:
                    declared[label] += int(n)
                    if counted:
                        counts[label] += int(n)
                        if model_label is not None:
                            model[model_label] += int(n)  # their stances do not count: add what the model says
                    if model_label is not None and model_label != UNCLEAR:
                        both += int(n)
                        agree += int(n) if model_label == label else 0
        tally = Tally(prompt.id, prompt.label_names, dict(counts))
        return tally, Comparison(prompt.label_names, dict(model), dict(declared), both, agree)
