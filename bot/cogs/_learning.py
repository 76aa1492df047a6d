"""``/prompt info`` and ``/prompt reclassify`` (a mixin of the ``/prompt`` cog), and the listeners that tell the
server learning (:class:`bot.pipeline.learning.ServerLearning`) a prompt got new labels."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs._checks import moderator_only
from bot.cogs._prompts import prompt_autocomplete
from bot.cogs._schedule import when
from bot.core.moderation import AuditRecord
from bot.pipeline.learning import Trained
from bot.storage.learning import HeadRecord, Reclassified
from bot.storage.records import DeclareResult

if TYPE_CHECKING:
    from bot.app import Stancebot

log = logging.getLogger(__name__)

NONE = discord.AllowedMentions.none()
#: Audit actions that label a reply.
LABELLING = ("relabel", "review")
#: Replies re-classified per batch (so replies arriving meanwhile are not held up long).
RECLASSIFY_BATCH = 256


def _figures(record: HeadRecord) -> str:
    f = record.figures
    line = (
        f"k-fold macro-F1 **{f.get('head_macro_f1', 0):.3f}** (head) vs **{f.get('base_macro_f1', 0):.3f}** (base) "
        f"on {f.get('n', record.n_labels)} labels"
    )
    if f.get("current_fresh_macro_f1") is not None:
        line += (
            f"; on the {f.get('n_fresh')} labels newer than the head it replaced: "
            f"{f.get('head_fresh_macro_f1', 0):.3f} vs {f.get('current_fresh_macro_f1', 0):.3f}"
        )
    return line


class PromptLearningCommands(commands.Cog):
    """What serves a prompt and how well (``/prompt info``), re-classifying with it (``/prompt reclassify``)."""

    bot: Stancebot

    @commands.Cog.listener()
    async def on_stance_declared(self, result: DeclareResult) -> None:
        """A member's declared stance labels their latest reply."""
        if self.bot.services.learning is not None and result.guild_id:
            self.bot.services.learning.poke(result.guild_id, result.prompt_slug)

    @commands.Cog.listener()
    async def on_stance_audit(self, record: AuditRecord) -> None:
        """A moderator's relabel or review decision labels a reply."""
        learning = self.bot.services.learning
        if learning is not None and record.action in LABELLING and record.guild_id and record.prompt_slug:
            learning.poke(record.guild_id, record.prompt_slug)

    @commands.Cog.listener()
    async def on_prompt_trained(self, trained: Trained) -> None:
        """A background training finished: its audit entry goes to the mod-log channel like every other."""
        self.bot.dispatch("stance_audit", trained.audit)

    @app_commands.command(name="info", description="Which model serves a prompt here, and how well it does")
    @app_commands.describe(prompt="Which prompt")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    async def info(self, interaction: discord.Interaction, prompt: str) -> None:
        """The prompt's model and version, its measured quality, labelled replies so far, when it last trained."""
        assert interaction.guild_id is not None
        guild_id = interaction.guild_id
        services = self.bot.services
        definition = self.bot.resolve_prompt(prompt, guild_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        model = await services.stance.served(definition.id, guild_id)
        store = services.repo.learning
        labelled = await store.labelled_replies(guild_id, definition.id)
        active = await store.active_head(guild_id, definition.id)
        latest = await store.latest_head(guild_id, definition.id)
        learning, policy = services.learning, services.settings.learning
        embed = discord.Embed(title=f"Prompt {definition.id}: model", colour=discord.Colour.blurple())
        kind = getattr(getattr(model, "inner", model), "kind", None) or model.version.split(":", 1)[0]
        embed.add_field(name="Model", value=f"{kind}\n`{model.version}`", inline=False)
        sources = ", ".join(
            f"{n} {src}" for src in ("declared", "relabel", "review") if (n := sum(r.source == src for r in labelled))
        )
        embed.add_field(
            name="Labelled replies", value=f"{len(labelled)}" + (f" ({sources})" if sources else ""), inline=False
        )
        if active is not None:
            embed.add_field(name="Quality", value=_figures(active), inline=False)
        if latest is not None:
            verdict = "serving" if latest.active else "kept the current model (not better)"
            embed.add_field(
                name="Last trained",
                value=f"{when(latest.trained_at)} on {latest.n_labels} labels in {latest.seconds:.2f} s: "
                f"`{latest.version}`, {verdict}\n{_figures(latest)}",
                inline=False,
            )
        if learning is None or not learning.learnable(guild_id, definition.id):
            plan = "This prompt does not learn from the server (a shared prompt with its own trained model)."
        elif not policy.enabled:
            plan = "Learning from the server is off (`learning.enabled`)."
        elif learning.busy(guild_id, definition.id):
            plan = "Training now, in the background."
        else:
            due = policy.min_labels if latest is None else latest.n_labels + policy.retrain_step
            plan = f"Trains again at {max(due, policy.min_labels)} labelled replies."
        embed.add_field(name="Learning", value=plan, inline=False)
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=NONE)

    @app_commands.command(name="reclassify", description="Re-classify a prompt's open replies with its current model")
    @app_commands.describe(prompt="Which prompt")
    @app_commands.autocomplete(prompt=prompt_autocomplete)
    @moderator_only()
    async def reclassify(self, interaction: discord.Interaction, prompt: str) -> None:
        """Give the model stances of the prompt's open replies the current model's answer (moderators' labels and
        closed posts stay); answers with how many changed."""
        assert interaction.guild_id is not None
        guild_id = interaction.guild_id
        services = self.bot.services
        definition = self.bot.resolve_prompt(prompt, guild_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        replies = await services.repo.learning.open_model_replies(guild_id, definition.id)
        done = changed = 0
        version = services.stance.version(definition.id, guild_id)
        for start in range(0, len(replies), RECLASSIFY_BATCH):
            chunk = replies[start : start + RECLASSIFY_BATCH]
            results = await services.stance.classify_many(definition.id, [t for _, t in chunk], guild_id=guild_id)
            version = services.stance.version(definition.id, guild_id)  # results routed elsewhere name their own
            outcome = await services.repo.learning.reclassify(
                guild_id,
                definition.id,
                [(rid, text, res) for (rid, text), res in zip(chunk, results, strict=True)],
                model_version=version,
            )
            done, changed = done + outcome.replies, changed + outcome.changed
        record = await services.repo.learning.record_reclassify(
            guild_id, definition.id, Reclassified(done, changed), model_version=version, actor_id=interaction.user.id
        )
        log.info("Guild %s re-classified %d replies of prompt %s with %s", guild_id, done, definition.id, version)
        await interaction.followup.send(
            f"Re-classified {done} open replies of **{definition.id}** with `{version}`: {changed} changed stance.",
            ephemeral=True,
            allowed_mentions=NONE,
        )
        self.bot.dispatch("stance_audit", record)
