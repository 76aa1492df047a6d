"""``/prompt``: post, add, list, close, reopen, schedule, info and reclassify discussion prompts (one group, built
here from mixins), and the stance buttons on prompt messages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import ensure_moderator, moderator_only, require_bot_permissions
from bot.cogs._learning import PromptLearningCommands
from bot.cogs._prompts import prompt_autocomplete, publish_prompt
from bot.cogs._render import prompt_list_embed
from bot.cogs._schedule import PromptScheduleCommands
from bot.cogs._views import DeclareButton
from bot.cogs.errors import guarded
from bot.core.errors import PromptError
from bot.core.prompt_form import LABELS_HELP, MAX_INPUT, prompt_from_form
from bot.core.prompts import MAX_QUESTION, MAX_SOURCE, MAX_SUMMARY, MAX_TITLE, SLUG_RE

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()


class AddPromptModal(discord.ui.Modal, title="Add a discussion prompt"):
    """The ``/prompt add`` form: five inputs, the most a modal holds (the name comes from the command)."""

    def __init__(self, bot: Stancebot, name: str) -> None:
        super().__init__(custom_id="stancebot:prompt-add", timeout=1800)
        self.bot, self.name = bot, name
        self.title_input: discord.ui.TextInput[AddPromptModal] = discord.ui.TextInput(
            custom_id="title", max_length=MAX_TITLE
        )
        self.question: discord.ui.TextInput[AddPromptModal] = discord.ui.TextInput(
            custom_id="question", style=discord.TextStyle.paragraph, max_length=MAX_QUESTION
        )
        self.context: discord.ui.TextInput[AddPromptModal] = discord.ui.TextInput(
            custom_id="context", style=discord.TextStyle.paragraph, max_length=MAX_SUMMARY
        )
        self.labels: discord.ui.TextInput[AddPromptModal] = discord.ui.TextInput(
            custom_id="labels",
            style=discord.TextStyle.paragraph,
            max_length=MAX_INPUT,
            placeholder="fair: The deal is fair | Japan pays billions\nunfair: The U.S. pays too much | pay more",
        )
        self.source: discord.ui.TextInput[AddPromptModal] = discord.ui.TextInput(
            custom_id="source", required=False, max_length=MAX_SOURCE
        )
        self.add_item(discord.ui.Label(text="Title", component=self.title_input))
        self.add_item(discord.ui.Label(text="Question", component=self.question))
        self.add_item(discord.ui.Label(text="Context", description="A short, neutral summary", component=self.context))
        self.add_item(discord.ui.Label(text="Stance labels", description=LABELS_HELP[:100], component=self.labels))
        self.add_item(discord.ui.Label(text="Source (optional)", component=self.source))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Validate; store and announce the prompt, or say what is wrong and store nothing."""
        await guarded(interaction, self._add(interaction), what="Prompt add form")

    async def _add(self, interaction: discord.Interaction) -> None:
        ensure_moderator(interaction)
        assert interaction.guild_id is not None
        prompt = prompt_from_form(
            name=self.name,
            title=self.title_input.value,
            question=self.question.value,
            context=self.context.value,
            labels=self.labels.value,
            source=self.source.value,
        )
        services = self.bot.services
        await services.repo.prompts.add_guild_prompt(prompt, interaction.guild_id, actor_id=interaction.user.id)
        self.bot.register_prompt(prompt, interaction.guild_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        await services.stance.warm_up([prompt.id], guild_id=interaction.guild_id)  # off the event loop
        labels = ", ".join(f"`{name}`" for name in prompt.label_names)
        log.info("Guild %s added prompt %s", interaction.guild_id, prompt.id)
        await interaction.followup.send(
            f"Added **{prompt.id}** ({labels}). Post it with `/prompt post prompt:{prompt.id}`.",
            ephemeral=True,
            allowed_mentions=NONE,
        )


@app_commands.guild_only()
class Prompts(
    PromptScheduleCommands,
    PromptLearningCommands,
    commands.GroupCog,
    group_name="prompt",
    group_description="Discussion prompts",
):
    """Posting, managing and scheduling prompts; registers the stance buttons of prompt messages."""

    def __init__(self, bot: Stancebot) -> None:
        self.bot = bot
        super().__init__()

    async def cog_load(self) -> None:
        """Handle presses of the stance buttons on prompt messages (also those sent before a restart)."""
        self.bot.add_dynamic_items(DeclareButton)

    async def cog_unload(self) -> None:
        """Stop handling the stance buttons."""
        self.bot.remove_dynamic_items(DeclareButton)

    @app_commands.command(name="post", description="Post a discussion prompt here and open a thread for replies")
    @app_commands.describe(prompt="Which prompt to post")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def post(self, interaction: discord.Interaction, prompt: str) -> None:
        """Post ``prompt`` as an embed (with stance buttons) and open its thread."""
        assert interaction.guild is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild.id)
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            await interaction.response.send_message("Prompts can be posted in text channels only.", ephemeral=True)
            return
        if await self.bot.services.repo.prompts.prompt_state(definition.id, interaction.guild.id) == "closed":
            raise PromptError(f"Prompt {definition.id!r} is closed here; `/prompt reopen` it first.")
        require_bot_permissions(
            channel, send_messages=True, embed_links=True, create_public_threads=True, send_messages_in_threads=True
        )
        await interaction.response.defer(ephemeral=True, thinking=True)
        post = await publish_prompt(self.bot, channel, definition, posted_by=interaction.user.id)
        await interaction.followup.send(f"Posted **{definition.id}**; replies are read in <#{post.thread_id}>.")

    @app_commands.command(name="add", description="Add a discussion prompt for this server (opens a form)")
    @app_commands.describe(name="Short name: 2-32 lowercase letters, digits or _ (e.g. tariffs_2026)")
    @moderator_only()
    async def add(self, interaction: discord.Interaction, name: str) -> None:
        """Open the form; the name is checked first so a taken or malformed one is refused at once."""
        name = name.strip().lower()
        if not SLUG_RE.match(name):
            raise PromptError(
                f"Name {name!r} must be 2-32 characters of lowercase letters, digits and '_', starting with a letter."
            )
        if self.bot.services.catalog.visible(name, interaction.guild_id):
            raise PromptError(f"A prompt named {name!r} already exists; choose another name.")
        await interaction.response.send_modal(AddPromptModal(self.bot, name))

    @app_commands.command(name="list", description="The prompts this server can use, and which are open")
    async def list_(self, interaction: discord.Interaction) -> None:
        """Every prompt with its state here, posts and counted stances."""
        assert interaction.guild_id is not None
        overview = await self.bot.services.repo.prompts.prompt_overview(interaction.guild_id)
        visible = {p.id for p in self.bot.prompts_for(interaction.guild_id)}
        shown = [p for p in overview if p.slug in visible]
        await interaction.response.send_message(embed=prompt_list_embed(shown), ephemeral=True)

    @app_commands.command(name="close", description="Stop counting a prompt here (its data and tally stay)")
    @app_commands.describe(prompt="Which prompt")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def close(self, interaction: discord.Interaction, prompt: str) -> None:
        """Close every post of the prompt in this guild."""
        await self._set_closed(interaction, prompt, closed=True)

    @app_commands.command(name="reopen", description="Count a closed prompt's replies again")
    @app_commands.describe(prompt="Which prompt")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def reopen(self, interaction: discord.Interaction, prompt: str) -> None:
        """Reopen every post of the prompt in this guild."""
        await self._set_closed(interaction, prompt, closed=False)

    async def _set_closed(self, interaction: discord.Interaction, prompt: str, *, closed: bool) -> None:
        assert interaction.guild_id is not None
        definition = self.bot.resolve_prompt(prompt, interaction.guild_id)
        posts = await self.bot.services.repo.prompts.set_prompt_closed(
            definition.id, interaction.guild_id, closed=closed, actor_id=interaction.user.id
        )
        for post in posts:
            self.bot.remember_post(post)
        if closed:
            text = f"Closed **{definition.id}**: new replies and stance buttons no longer count; the tally stays."
        else:
            text = f"Reopened **{definition.id}**: replies count again."
        await interaction.response.send_message(text, ephemeral=True)


async def setup(bot: Stancebot) -> None:
    """Load the cog."""
    await bot.add_cog(Prompts(bot))
