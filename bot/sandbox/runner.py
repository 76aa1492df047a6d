"""``stancebot sandbox``: the real bot against the loopback Discord server, with members' replies played in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bot.config import Settings
from bot.core.errors import ConfigError
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.text import terminal_safe
from bot.pipeline import ReplyOutcome
from bot.sandbox.harness import new_guild, text_of, world_on
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import sqlite_url

log = logging.getLogger(__name__)

SAMPLE_REPLIES = Path(str(files("bot.sandbox") / "sample_replies.jsonl"))
#: Stopped while a reply is in flight, how long the sandbox still waits for its stance (seconds).
IN_FLIGHT_WAIT = 2.0
STANCE_STYLE = {UNCLEAR: "dim"}


@dataclass(frozen=True)
class ScriptedReply:
    """One line of a replies file."""

    prompt: str
    author: str
    text: str


def load_replies(path: Path) -> list[ScriptedReply]:
    """Read a JSONL file of ``{prompt, author, text}`` objects; a bad line is named, not skipped."""
    replies = []
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path.name} is not UTF-8 text (byte {exc.start + 1}); save it as UTF-8.") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data["text"], str):
                raise TypeError("text is not a string")
            replies.append(ScriptedReply(str(data["prompt"]), str(data.get("author") or "member"), data["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path.name} line {number}: expected {{prompt, author, text}} ({exc}).") from None
    return replies


class Sandbox:
    """A loopback Discord with one guild, a #debate channel, a moderator and members, plus the real bot: the
    harness's :class:`~bot.sandbox.harness.World`, printed to a console."""

    def __init__(self, settings: Settings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.server = LoopbackDiscord()
        self.threads: dict[str, int] = {}
        #: Replies sent so far.
        self.sent = 0
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Sandbox:
        await self.server.start()
        self.server.install()
        self._stack.push_async_callback(self._stop_server)
        guild = new_guild(self.server, "Stancebot Sandbox", moderator="moderator")
        self.world = await self._stack.enter_async_context(world_on(self.server, self.settings, guild=guild))
        return self

    async def _stop_server(self) -> None:
        await self.server.stop()
        self.server.uninstall()

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def post_prompt(self, prompt_id: str) -> None:
        """The moderator runs ``/prompt post``; remember the thread it opens."""
        result, post = await self.world.post_prompt(prompt_id)
        if post is None:
            raise RuntimeError(f"/prompt post {prompt_id} opened no thread: {text_of(result)}")
        self.threads[prompt_id] = post.thread_id
        prompt = self.world.runtime.services.catalog.get(prompt_id)
        labels = ", ".join(label.name for label in prompt.stance_labels)
        self.console.rule(f"[bold]#{self.world.channel.name}[/]: {escape(terminal_safe(prompt.title))}")
        answer = text_of(result).replace(f"<#{post.thread_id}>", f"#{prompt.title[:100]}")
        self.console.print(f"[bold magenta]moderator[/] /prompt post {prompt_id}  →  {escape(terminal_safe(answer))}")
        self.console.print(f"[dim]{escape(terminal_safe(prompt.question))}\ncounts: {escape(terminal_safe(labels))}[/]")

    async def reply(self, prompt_id: str, author: str, text: str) -> ReplyOutcome | None:
        """A member replies in the prompt's thread; wait until the bot has stored its stance. Stopped meanwhile
        (SIGTERM), it still waits a few seconds for that stance, so that no reply it sent is left behind."""
        self.sent += 1
        reply = asyncio.ensure_future(self.world.reply(self.threads[prompt_id], author, text, timeout=30))
        try:
            outcome = await asyncio.shield(reply)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reply, IN_FLIGHT_WAIT)
            raise
        except TimeoutError:
            self.console.print(f"[red]{author}: no stance recorded within 30 s[/]")
            return None
        self._print_outcome(author, text, outcome)
        return outcome

    def _print_outcome(self, author: str, text: str, outcome: ReplyOutcome) -> None:
        result = outcome.result
        style = STANCE_STYLE.get(result.label, "bold green")
        shown = escape(terminal_safe(text if len(text) <= 110 else text[:109] + "…"))
        why = f" [dim]({escape(terminal_safe(result.reason))})[/]" if result.reason else ""
        who = escape(terminal_safe(author))
        self.console.print(
            f"[cyan]{who:>10}[/] {shown}\n{'':>10} → [{style}]{result.label}[/] {result.confidence:.2f}{why}"
        )

    async def show_tally(self, prompt_id: str) -> None:
        """A member runs ``/stance tally``; print what the bot answered."""
        result = await self.server.slash(
            self.world.guild,
            self.world.channel.id,
            self.world.member("maya"),
            "stance",
            subcommand="tally",
            options={"prompt": prompt_id},
        )
        for embed in result.embeds:
            self.console.print(f"\n[bold]{escape(terminal_safe(embed.get('title', '')))}[/]")
            self.console.print(escape(terminal_safe(embed.get("description", "").strip("`\n"))))
            footer = embed.get("footer", {}).get("text")
            if footer:
                self.console.print(f"[dim]{escape(terminal_safe(footer))}[/]")

    def mention_report(self) -> Table:
        """What the bot sent, and whether any of it could have pinged anyone."""
        table = Table(title="What the bot sent to Discord", show_lines=False)
        table.add_column("requests")
        table.add_column("messages / interaction answers")
        table.add_column("could ping anyone")
        sends = [r for r in self.server.requests if r.method in {"POST", "PATCH"} and isinstance(r.json, dict)]
        pinging = [r for r in sends if _may_ping(r.json)]
        table.add_row(str(len(self.server.requests)), str(len(sends)), "yes: " + str(len(pinging)) if pinging else "no")
        return table


def _may_ping(payload: dict[str, Any]) -> bool:
    """Whether a message payload lets Discord turn mentions into pings."""
    data = payload.get("data", payload)
    if not isinstance(data, dict) or not any(k in data for k in ("content", "embeds")):
        return False
    allowed = data.get("allowed_mentions")
    if allowed is None:
        return True
    return bool(allowed.get("parse") or allowed.get("users") or allowed.get("roles") or allowed.get("replied_user"))


def throwaway_settings(settings: Settings, folder: Path, database: str | None) -> Settings:
    """Settings for a sandbox run in ``folder``: its database (unless one is given) and its outage spool live and
    die with the run, not in the working folder."""
    url = database or sqlite_url(folder / "sandbox.db")
    return settings.model_copy(
        update={
            "database": settings.database.model_copy(update={"url": url}),
            "pipeline": settings.pipeline.model_copy(update={"spool_dir": str(folder / "spool")}),
        }
    )


async def run_sandbox(
    settings: Settings,
    *,
    replies: Path | None = None,
    interactive: bool = False,
    database: str | None = None,
    console: Console | None = None,
) -> None:
    """Start the loopback server and the bot, post both seed prompts, play the replies, print the tallies."""
    console = console or Console(highlight=False)
    scripted = [] if interactive and replies is None else load_replies(replies or SAMPLE_REPLIES)
    with tempfile.TemporaryDirectory(prefix="stancebot-sandbox-") as tmp:
        settings = throwaway_settings(settings, Path(tmp), database)
        console.print("[bold]Stancebot sandbox[/]: the real bot on a local Discord-compatible server (no token needed)")
        catalog = PromptCatalog.from_dir(settings.prompts_dir())
        prompt_ids = list(dict.fromkeys([r.prompt for r in scripted] or catalog.ids()))
        for pid in prompt_ids:
            catalog.get(pid)  # an unknown prompt fails here, before anything starts
        async with Sandbox(settings, console) as sandbox:
            try:
                for pid in prompt_ids:
                    await sandbox.post_prompt(pid)
                    for line in (r for r in scripted if r.prompt == pid):
                        await sandbox.reply(pid, line.author, line.text)
            except asyncio.CancelledError:
                console.print(f"Stopping after {sandbox.sent} replies …")
                raise
            if interactive:
                await _interactive(sandbox, prompt_ids, console)
            console.rule("[bold]Tallies[/]")
            for pid in prompt_ids:
                await sandbox.show_tally(pid)
            console.print()
            console.print(sandbox.mention_report())


async def _interactive(sandbox: Sandbox, prompt_ids: list[str], console: Console) -> None:
    current = prompt_ids[0]
    console.rule("[bold]Your turn[/]")
    console.print(
        f"Type a reply as member [cyan]you[/] to [bold]{current}[/]. "
        f"Start a line with 'PROMPT:' to switch ({', '.join(prompt_ids)}); an empty line ends."
    )
    while True:
        try:
            line = await asyncio.to_thread(input, f"{current}> ")
        except EOFError:
            break
        if not line.strip():
            break
        head, sep, rest = line.partition(":")
        if sep and head.strip() in prompt_ids:
            current, line = head.strip(), rest.strip()
            if not line:
                continue
        await sandbox.reply(current, "you", line)
