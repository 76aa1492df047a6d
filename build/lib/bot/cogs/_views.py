"""Buttons that keep working after a restart: ``DynamicItem`` subclasses whose state lives in the custom id.

* ``stancebot:declare:<label>`` on a prompt message: a member declares (or takes back) their stance; the prompt
  is found from the message the button is on.
* ``stancebot:review:<item>:<label>`` and ``stancebot:review-skip:<item>`` on a review message: a moderator
  labels (or skips) a reply the model was unsure about.

Each is registered by the cog that owns it (``add_dynamic_items`` in ``cog_load``: the declare button by
:mod:`bot.cogs.prompts`, the review buttons by :mod:`bot.cogs.moderation`); nothing is kept in memory, so a
restarted bot handles presses on messages sent before it started.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.cogs._checks import ensure_moderator
from bot.cogs._render import review_done_embed, review_embed
from bot.cogs.errors import guarded
from bot.core.prompts import Prompt
from bot.storage.records import ReviewInfo

if TYPE_CHECKING:
    from bot.app import Stancebot

LABEL = r"[a-z][a-z0-9_]{1,31}"
#: Discord's limits: 5 buttons per row, 5 rows per message.
ROW_WIDTH = 5
MAX_BUTTONS = 25


def _bot(interaction: discord.Interaction) -> Stancebot:
    return interaction.client  # type: ignore[return-value]


def _button_text(label: str) -> str:
    return label.replace("_", " ")[:80]


class DeclareButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.compile(rf"^stancebot:declare:(?P<label>{LABEL})$")
):
    """A stance button on a prompt message."""

    def __init__(self, label: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=_button_text(label), style=discord.ButtonStyle.secondary, custom_id=f"stancebot:declare:{label}"
            )
        )
        self.stance = label

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> DeclareButton:
        """Rebuild the button from its custom id."""
        return cls(match["label"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Declare the stance (or take it back when it was already the member's declaration)."""
        await guarded(interaction, self._declare(interaction), what="Declare button")

    async def _declare(self, interaction: discord.Interaction) -> None:
        if interaction.guild_id is None or interaction.message is None:
            return
        bot = _bot(interaction)
        result = await bot.services.repo.writes.declare(
            interaction.message.id, author_id=interaction.user.id, label=self.stance
        )
        if result.current is None:
            text = f"You took back your declared stance (`{result.previous}`) on **{result.prompt_slug}**."
        elif result.counted:
            text = f"Your stance on **{result.prompt_slug}** is now `{result.current}`; it is what the tally counts."
        else:
            text = (
                f"Noted: you declared `{result.current}` on **{result.prompt_slug}**. The tally counts your replies; "
                "the declaration is shown beside it."
            )
        if result.current is not None:
            text += " Press the same button again to take it back."
        await interaction.response.send_message(text, ephemeral=True)
        bot.dispatch("stance_declared", result)


class ReviewButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(rf"^stancebot:review:(?P<item>\d+):(?P<label>{LABEL})$"),
):
    """A label button on a review message (moderators only)."""

    def __init__(self, item_id: int, label: str, *, suggested: bool = False) -> None:
        style = discord.ButtonStyle.primary if suggested else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(label=_button_text(label), style=style, custom_id=f"stancebot:review:{item_id}:{label}")
        )
        self.item_id, self.stance = item_id, label

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReviewButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["item"]), match["label"])

    async def callback(self, interaction: discord.Interaction) -> None:
        """Relabel the reply, record it in the audit log, and update the message."""
        await guarded(interaction, self._choose(interaction), what="Review button")

    async def _choose(self, interaction: discord.Interaction) -> None:
        ensure_moderator(interaction)
        assert interaction.guild_id is not None
        bot = _bot(interaction)
        record = await bot.services.repo.moderation.resolve_review(
            self.item_id, guild_id=interaction.guild_id, label=self.stance, actor_id=interaction.user.id
        )
        outcome = f"Labelled `{record.to_label}` (model: `{record.from_label}`) by <@{interaction.user.id}>."
        await show_after_review(interaction, self.item_id, outcome)
        bot.dispatch("stance_audit", record)


class ReviewSkipButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=re.compile(r"^stancebot:review-skip:(?P<item>\d+)$")
):
    """ "Skip" on a review message: the item leaves the queue, the model's stance stays."""

    def __init__(self, item_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="skip", style=discord.ButtonStyle.danger, custom_id=f"stancebot:review-skip:{item_id}"
            )
        )
        self.item_id = item_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> ReviewSkipButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["item"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Take the item out of the queue."""
        await guarded(interaction, self._skip(interaction), what="Review skip button")

    async def _skip(self, interaction: discord.Interaction) -> None:
        ensure_moderator(interaction)
        assert interaction.guild_id is not None
        await _bot(interaction).services.repo.moderation.skip_review(
            self.item_id, guild_id=interaction.guild_id, actor_id=interaction.user.id
        )
        await show_after_review(interaction, self.item_id, f"Skipped by <@{interaction.user.id}>.")


def _rows(view: discord.ui.View, items: list[discord.ui.Item[Any]]) -> discord.ui.View:
    for index, item in enumerate(items[:MAX_BUTTONS]):
        item.row = index // ROW_WIDTH
        view.add_item(item)
    return view


def declare_view(prompt: Prompt) -> discord.ui.View:
    """A button per stance (not ``unclear``) for the prompt message."""
    items: list[discord.ui.Item[Any]] = [DeclareButton(label.name) for label in prompt.stance_labels]
    return _rows(discord.ui.View(timeout=None), items)


def review_view(info: ReviewInfo) -> discord.ui.View:
    """A button per label of the reply's prompt, and skip."""
    items: list[discord.ui.Item[Any]] = [
        ReviewButton(info.id, label, suggested=label == info.model_label) for label in info.labels
    ]
    items.append(ReviewSkipButton(info.id))
    return _rows(discord.ui.View(timeout=None), items)


async def show_after_review(interaction: discord.Interaction, item_id: int, outcome: str) -> None:
    """Update the review message: a private ``/review next`` moves on to the next item, a channel message shows
    the decision (without the reply's text)."""
    repo = _bot(interaction).services.repo
    message = interaction.message
    if message is not None and message.flags.ephemeral and interaction.guild_id is not None:
        nxt = await repo.moderation.next_review(interaction.guild_id)
        if nxt is not None:
            await interaction.response.edit_message(content=outcome, embed=review_embed(nxt), view=review_view(nxt))
            return
        await interaction.response.edit_message(content=f"{outcome} The review queue is empty.", embed=None, view=None)
        return
    info = await repo.moderation.review_item(item_id)
    if info is None:
        await interaction.response.edit_message(content=outcome, embed=None, view=None)
        return
    await interaction.response.edit_message(content=None, embed=review_done_embed(info, outcome), view=None)
