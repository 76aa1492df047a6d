"""Reading replies in prompt threads, and ``/stance``: tally, submit, relabel, export.

One ``/stance`` group, built here from mixins: the privacy subcommands (forget-me, mydata, opt-out, opt-in) are
:class:`bot.cogs._privacy_commands.PrivacyCommands`.
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import NO_CONTENT_NOTE, in_flight
from bot.cogs._checks import command_allowed, moderator_only, server_only
from bot.cogs._privacy_commands import PrivacyCommands
from bot.cogs._prompts import prompt_autocomplete
from bot.cogs._render import tally_embed
from bot.core.errors import StancebotError, StorageError
from bot.core.export import check_size, render_rows
from bot.core.moderation import message_link, parse_message_link
from bot.core.prompts import UNCLEAR
from bot.pipeline import ReplyOutcome
from bot.storage.records import OptedOutError, PromptClosedError

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


async def label_autocomplete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Labels of the linked reply's prompt (or of every prompt here, before a link is given); nothing for a link
    or id that is not a reply stored in this server, and nothing for someone the command would refuse."""
    bot: Stancebot = interaction.client  # type: ignore[assignment]
    guild_id = interaction.guild_id
    if guild_id is None or not await command_allowed(interaction):
        return []
    link = getattr(interaction.namespace, "message", None)
    if link:
        try:
            ref = parse_message_link(str(link))
        except StancebotError:
            return []
        if ref.guild_id not in (None, guild_id):
            return []
        slug = await bot.services.repo.tallies.reply_prompt(ref.message_id, guild_id)
        if slug is None or not bot.services.catalog.visible(slug, guild_id):
            return []
        prompts = [bot.services.catalog.get(slug, guild_id)]
    else:
        prompts = bot.prompts_for(guild_id)
    labels: list[str] = []
    for prompt in prompts:
        labels.extend(name for name in prompt.label_names if name not in labels)
    return [app_commands.Choice(name=name, value=name) for name in labels if current.lower() in name][:25]


@app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
class StanceCog(PrivacyCommands, commands.GroupCog, group_name="stance", group_description="Stances and tallies"):
    """Classifies replies and shows tallies."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        super().__init__()

    # -- replies ------------------------------------------------------------------------------------------------

    def _text_of(self, content: str) -> str:
        """The reply's text without mentions of the bot (members mention it when it cannot read messages)."""
        assert self.bot.user is not None
        text, mentions = re.subn(rf"<@!?{self.bot.user.id}>", " ", content)
        return text.strip() if mentions else content

    @commands.Cog.listener()
    @in_flight
    async def on_message(self, message: discord.Message) -> None:
        """Store and classify a member's reply in a prompt thread (never bots', webhooks' or the bot's own)."""
        if message.author.bot or message.webhook_id is not None or not isinstance(message.channel, discord.Thread):
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        post = await self.bot.post_for_thread(message.channel.id)
        if post is None:
            return
        content = self._text_of(message.content)
        if not content and not self.bot.message_content_enabled:
            return  # Discord withheld the text: nothing to classify
        try:
            outcome = await self.bot.services.pipeline.on_reply(
                post,
                message_id=message.id,
                author_id=message.author.id,
                content=content,
                created_at=message.created_at,
            )
        except StorageError:
            log.exception("Reply %s in thread %s could not be stored", message.id, message.channel.id)
            return
        if outcome is not None:
            await self._announce(outcome, message)

    @commands.Cog.listener()
    @in_flight
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """Reclassify an edited reply (unless its prompt is closed here)."""
        content = payload.data.get("content")
        if content is None or await self.bot.post_for_thread(payload.channel_id) is None:
            return
        content = self._text_of(content)
        if not content and not self.bot.message_content_enabled:
            return
        outcome = await self.bot.services.pipeline.on_edit(payload.message_id, content, discord.utils.utcnow())
        if outcome is not None:
            self.bot.dispatch("stance_recorded", outcome)

    @commands.Cog.listener()
    @in_flight
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """Retract a deleted reply."""
        if await self.bot.post_for_thread(payload.channel_id) is None:
            return
        if await self.bot.services.pipeline.on_delete(payload.message_id):
            self.bot.dispatch("reply_retracted", payload.message_id)

    @commands.Cog.listener()
    @in_flight
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        """Retract replies a moderator purged in bulk."""
        if await self.bot.post_for_thread(payload.channel_id) is None:
            return
        for message_id in sorted(payload.message_ids):
            if await self.bot.services.pipeline.on_delete(message_id):
                self.bot.dispatch("reply_retracted", message_id)

    async def _announce(self, outcome: ReplyOutcome, message: discord.Message) -> None:
        self.bot.dispatch("stance_recorded", outcome)
        if self.bot.services.settings.bot.react_to_replies:
            emoji = "❔" if outcome.result.label == UNCLEAR else "🗳️"
            try:
                await message.add_reaction(emoji)
            except discord.HTTPException:
                log.debug("Could not react to %s", message.id)

    # -- commands -----------------------------------------------------------------------------------------------

    @app_commands.command(name="tally", description="Show how many members take each stance on a prompt")
    @app_commands.describe(prompt="Which prompt", public="Show the tally to everyone in the channel")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @server_only()
    async def tally(self, interaction: discord.Interaction, prompt: str, public: bool = False) -> None:
        """Counts and shares per stance, with declared stances beside the model's."""
        services = self.bot.services
        assert interaction.guild_id is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild_id)
        tally, comparison = await services.repo.tallies.standings(definition, interaction.guild_id)
        version = services.stance.model(definition.id, interaction.guild_id).version
        note = f"{tally.total} counted · model {version}"
        if version.startswith("similarity:"):
            note += " (similarity baseline: no trained model yet)"
        if services.settings.moderation.declared_overrides and any(comparison.declared.values()):
            note += " · declared stances override the model"
        notice = "" if self.bot.message_content_enabled else NO_CONTENT_NOTE
        if await services.repo.prompts.prompt_state(definition.id, interaction.guild_id) == "closed":
            notice = ("This prompt is closed: the tally no longer changes. " + notice).strip()
        ephemeral = services.settings.bot.tally_ephemeral and not public
        await interaction.response.send_message(
            embed=tally_embed(definition, tally, model_note=note, comparison=comparison, notice=notice),
            ephemeral=ephemeral,
            allowed_mentions=NONE,
        )

    @app_commands.command(name="submit", description="Give your reply to a prompt here (it is classified and counted)")
    @app_commands.describe(prompt="Which prompt", text="Your reply")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @server_only()
    async def submit(
        self, interaction: discord.Interaction, prompt: str, text: app_commands.Range[str, 1, 2000]
    ) -> None:
        """A reply through a command: works without the message-content intent."""
        services = self.bot.services
        assert interaction.guild_id is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild_id)
        post = await services.repo.prompts.latest_open_post(definition.id, interaction.guild_id)
        if post is None:
            raise PromptClosedError(f"Prompt {definition.id!r} is not open here (post it with /prompt post).")
        if await services.repo.privacy.is_opted_out(interaction.guild_id, interaction.user.id):
            raise OptedOutError("You opted out of being counted here; `/stance opt-in` to take part again.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        outcome = await services.pipeline.on_reply(
            post,
            message_id=interaction.id,
            author_id=interaction.user.id,
            content=text,
            created_at=interaction.created_at,
        )
        if outcome is None:
            await interaction.followup.send("That reply was already counted.", ephemeral=True)
            return
        self.bot.dispatch("stance_recorded", outcome)
        label = outcome.result.label
        answer = (
            f"Counted on **{definition.id}** as `{label}`."
            if label != UNCLEAR
            else f"Stored on **{definition.id}**, but I could not tell your stance (`unclear`)."
        )
        await interaction.followup.send(answer + " Your latest reply with a stance is the one that counts.")

    @app_commands.command(name="relabel", description="Set a reply's stance by hand (moderators)")
    @app_commands.describe(message="Link to the reply (Copy Message Link) or its id", label="The stance it takes")
    @app_commands.autocomplete(label=label_autocomplete)
    @moderator_only()
    async def relabel(self, interaction: discord.Interaction, message: str, label: str) -> None:
        """Record a moderator's correction (audit log, mod-log channel) and update the tally."""
        assert interaction.guild_id is not None
        ref = parse_message_link(message)
        if ref.guild_id is not None and ref.guild_id != interaction.guild_id:
            raise StancebotError("That link points to a message in another server.")
        record = await self.bot.services.repo.moderation.relabel(
            ref.message_id, guild_id=interaction.guild_id, label=label.strip(), actor_id=interaction.user.id
        )
        self.bot.dispatch("stance_audit", record)
        assert record.channel_id is not None and record.message_id is not None
        link = message_link(interaction.guild_id, record.channel_id, record.message_id)
        await interaction.response.send_message(
            f"Relabelled {link} on **{record.prompt_slug}**: `{record.from_label}` → `{record.to_label}`. "
            "The tally is updated and the change is in the audit log.",
            ephemeral=True,
        )

    @app_commands.command(name="export", description="Download a prompt's replies and stances (moderators)")
    @app_commands.describe(prompt="Which prompt", format="csv (spreadsheets) or json")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def export(
        self, interaction: discord.Interaction, prompt: str, format: Literal["csv", "json"] = "csv"
    ) -> None:
        """Send the export as a private file."""
        assert interaction.guild_id is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        rows = await self.bot.services.repo.privacy.export_rows(definition.id, interaction.guild_id)
        limit = getattr(interaction, "filesize_limit", DEFAULT_UPLOAD_LIMIT) or DEFAULT_UPLOAD_LIMIT
        payload = check_size(render_rows(rows, format).encode(), limit, what="export")
        file = discord.File(io.BytesIO(payload), filename=f"{definition.id}-{interaction.guild_id}.{format}")
        await interaction.followup.send(
            f"{len(rows)} replies on **{definition.id}** (deleted replies and opted-out members left out).",
            file=file,
            ephemeral=True,
        )


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(StanceCog(bot))
