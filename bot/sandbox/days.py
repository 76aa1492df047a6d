"""``stancebot sandbox --days N``: N simulated days of replies under a fake clock, so a person sees several digests.

The real bot runs against the loopback Discord server as in :mod:`bot.sandbox.runner`; the only thing faked is
time: ``services.clock`` is a clock this module moves, and each reply's message id is a snowflake of its simulated
time (discord.py derives ``created_at`` from it). A moderator schedules the digest with ``/digest schedule``; the
digest cog's scheduler posts it whenever the simulated clock passes the schedule, with its chart, into #digests.
Replies are drawn from the prompt's labelled data with a mix that drifts from day to day, so the deltas and the
trend line have something to show.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import discord
from rich.console import Console
from rich.markup import escape

from bot.assets import data_dir
from bot.config import Settings
from bot.core.files import write_bytes_atomic
from bot.core.periods import zone
from bot.core.prompts import UNCLEAR, Prompt, PromptCatalog
from bot.core.text import terminal_safe
from bot.sandbox.runner import SAMPLE_REPLIES, Sandbox, throwaway_settings
from bot.storage.models import utcnow

DIGEST_AT = time(9, 0)
#: When the simulated clock starts on the first day (after the digest time: see :func:`run_days`).
START_AT = time(9, 5)
MEMBERS = 36
#: Share of replies whose author also presses the stance button for what they meant.
DECLARE_SHARE = 0.2


class SimulatedClock:
    """The bot's clock during the simulation."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Line:
    """A reply to play, with the stance it was written to take (``None`` when unknown)."""

    text: str
    label: str | None


def load_lines(prompt: Prompt) -> list[Line]:
    """The prompt's labelled replies (``models/data/<prompt>.jsonl``), else the sandbox's sample replies."""
    data = data_dir() / f"{prompt.id}.jsonl"
    lines: list[Line] = []
    if data.is_file():
        for raw in data.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                item = json.loads(raw)
                if item.get("prompt", prompt.id) == prompt.id and item.get("label") in prompt.label_names:
                    lines.append(Line(str(item["text"]), str(item["label"])))
    if not lines:
        for raw in SAMPLE_REPLIES.read_text(encoding="utf-8").splitlines():
            if raw.strip() and json.loads(raw).get("prompt") == prompt.id:
                lines.append(Line(str(json.loads(raw)["text"]), None))
    return lines


def day_mix(prompt: Prompt, day: int, days: int) -> dict[str, float]:
    """Stance weights on ``day``: the first stance gains ground over the run, the others lose some."""
    progress = day / max(days - 1, 1)
    stances = [label.name for label in prompt.stance_labels]
    weights = {label: 1.0 for label in stances}
    if stances:
        weights[stances[0]] = 0.8 + 1.6 * progress
    if len(stances) > 1:
        weights[stances[1]] = 1.6 - 1.0 * progress
    weights[UNCLEAR] = 0.5
    return weights


class _Snowflakes:
    """Message ids whose timestamps are the simulated times (unique even within one millisecond)."""

    def __init__(self) -> None:
        self.counter = 0

    def __call__(self, when: datetime) -> int:
        self.counter = (self.counter + 1) % 4096
        return discord.utils.time_snowflake(when) + self.counter


async def run_days(
    settings: Settings,
    days: int,
    *,
    prompt_id: str = "alliance",
    period: str | None = None,
    database: str | None = None,
    out_dir: Path | None = None,
    console: Console | None = None,
    seed: int = 7,
    replies_per_day: tuple[int, int] = (8, 14),
) -> list[Path]:
    """Simulate ``days`` days of discussion; returns the chart PNGs of the digests the bot posted."""
    console = console or Console(highlight=False)
    catalog = PromptCatalog.from_dir(settings.prompts_dir())
    prompt = catalog.get(prompt_id)
    kind = period or ("weekly" if days >= 14 else "daily")
    out = out_dir or Path(tempfile.mkdtemp(prefix="stancebot-digests-"))
    out.mkdir(parents=True, exist_ok=True)
    tz = zone(settings.general.timezone)
    # Start on a Monday, `days` days ago, so the digests carry recent dates; just after the digest time, so the
    # first digest covers the first period of replies rather than the empty one before.
    today = utcnow().astimezone(tz).date()
    first_day = today - timedelta(days=days)
    first_day -= timedelta(days=first_day.weekday())
    clock = SimulatedClock(datetime.combine(first_day, START_AT, tzinfo=tz))
    rng = random.Random(seed)
    lines = load_lines(prompt)
    snowflake = _Snowflakes()
    charts: list[Path] = []

    with tempfile.TemporaryDirectory(prefix="stancebot-sandbox-") as tmp:
        settings = throwaway_settings(settings, Path(tmp), database)
        console.print(
            f"[bold]Stancebot sandbox[/]: {days} simulated days of replies to [bold]{prompt.id}[/], "
            f"{kind} digests at {DIGEST_AT:%H:%M} ({tz.key})"
        )
        async with Sandbox(settings, console) as sandbox:
            sandbox.world.runtime.services.clock = clock
            cog = await _digest_cog(sandbox)
            # The simulation moves the clock itself and runs the scheduler at every moment something falls due, as
            # the running bot's scheduler would (its own loop sleeps in real time, so it is stopped here).
            await cog.scheduler.stop()
            digests = sandbox.server.create_channel(sandbox.world.guild, "digests")
            await sandbox.post_prompt(prompt.id)
            answer = await sandbox.server.slash(
                sandbox.world.guild,
                sandbox.world.channel.id,
                sandbox.world.moderator,
                "digest",
                subcommand="schedule",
                options={
                    "prompt": prompt.id,
                    "channel": digests,
                    "weekday": 0,
                    "time": f"{DIGEST_AT:%H:%M}",
                    "period": kind,
                },
            )
            console.print(f"[bold magenta]moderator[/] /digest schedule {prompt.id} #digests Monday 09:00 {kind}")
            console.print(f"[dim]{_shown(_plain(answer.content))}[/]")
            thread_id = sandbox.threads[prompt.id]
            repo = sandbox.world.runtime.services.repo
            post = await repo.prompts.post_for_thread(thread_id)

            async def advance(to: datetime) -> None:
                """Move the clock to ``to``, running the scheduler at each moment on the way that something is due."""
                last: datetime | None = None
                while (due := await cog.scheduler.schedules.next_wakeup()) is not None and due <= to and due != last:
                    last = due
                    clock.now = max(clock.now, due)
                    before = len(sandbox.server.bot_messages(digests.id))
                    await cog.scheduler.run_due()
                    for message, png in _new_digests(sandbox, digests.id, before):
                        path = out / f"digest-{len(charts) + 1:02d}.png"
                        write_bytes_atomic(path, png)
                        charts.append(path)
                        _print_digest(console, message, path)
                clock.now = max(clock.now, to)

            members = [sandbox.world.member(f"member{n:02d}") for n in range(MEMBERS)]
            buttons: dict[int, str] = {}  # each member's declared stance
            for day in range(days):
                date = first_day + timedelta(days=day)
                count = rng.randint(*replies_per_day)
                mix = day_mix(prompt, day, days)
                times = sorted(
                    datetime.combine(date, time(9, 30), tzinfo=tz) + timedelta(minutes=rng.randint(0, 13 * 60))
                    for _ in range(count)
                )
                labels = dict.fromkeys(prompt.label_names, 0)
                declared = 0
                for when in times:
                    await advance(when)
                    line = _pick(rng, lines, mix)
                    member = rng.choice(members)
                    message_id = snowflake(when)
                    while await repo.writes.known_message_ids([message_id]):  # an earlier run on this database
                        message_id = snowflake(when)
                    outcome = await _reply(sandbox, thread_id, member, line.text, message_id)
                    if outcome is not None:
                        labels[outcome] += 1
                    meant = line.label
                    pressed = meant not in (None, UNCLEAR, buttons.get(member.id)) and rng.random() < DECLARE_SHARE
                    if post is not None and meant is not None and pressed:
                        # Some members also press the stance button for what they meant (see the digest's
                        # "Declared with the buttons" line).
                        custom_id = f"stancebot:declare:{meant}"  # pressing one's current choice again withdraws it
                        channel_id = sandbox.world.channel.id
                        await sandbox.server.click(sandbox.world.guild, channel_id, member, post.message_id, custom_id)
                        buttons[member.id] = meant
                        declared += 1
                summary = ", ".join(f"{label} {n}" for label, n in labels.items() if n)
                summary += f"; {declared} stance buttons pressed" if declared else ""
                console.print(f"[cyan]{date:%a %d %b}[/] {count} replies: {summary}")
                # On to the next morning, past the digest time: the scheduler posts whatever falls due on the way.
                await advance(datetime.combine(date + timedelta(days=1), START_AT, tzinfo=tz))
    console.rule("[bold]Done[/]")
    console.print(f"{len(charts)} digests posted; charts in {out}")
    return charts


async def _digest_cog(sandbox: Sandbox) -> Any:
    bot = sandbox.world.runtime.bot
    for ext in ("bot.cogs.digest", "bot.cogs.guild_config"):
        if ext not in bot.extensions:  # when the bot was started without them
            await bot.load_extension(ext)
            await bot.tree.sync()
    cog = bot.get_cog("Digests")
    if cog is None:
        raise RuntimeError("the digest cog did not load; see the log above")
    return cog


def _pick(rng: random.Random, lines: list[Line], mix: dict[str, float]) -> Line:
    labelled = [line for line in lines if line.label is not None]
    if not labelled:
        return rng.choice(lines)
    label = rng.choices(list(mix), weights=list(mix.values()))[0]
    pool = [line for line in labelled if line.label == label] or labelled
    return rng.choice(pool)


async def _reply(sandbox: Sandbox, thread_id: int, member: Any, text: str, message_id: int) -> str | None:
    waiter = asyncio.ensure_future(
        sandbox.world.bot.wait_for("stance_recorded", check=lambda o: o.reply.message_id == message_id, timeout=30)
    )
    await sandbox.server.send_message(thread_id, member, text, message_id=message_id)
    try:
        outcome = await waiter
    except TimeoutError:
        return None
    return str(outcome.result.label)


def _new_digests(sandbox: Sandbox, channel_id: int, before: int) -> list[tuple[dict[str, Any], bytes]]:
    messages = sandbox.server.bot_messages(channel_id)[before:]
    uploads = [r for r in sandbox.server.requests if r.files and r.path.endswith(f"/channels/{channel_id}/messages")]
    uploads = uploads[len(uploads) - len(messages) :] if messages else []
    return [(m, u.files[0][1]) for m, u in zip(messages, uploads, strict=True)]


def _plain(text: str) -> str:
    """Discord timestamps (``<t:…:F>``) as readable UTC times for the terminal."""

    def stamp(match: re.Match[str]) -> str:
        return f"{datetime.fromtimestamp(int(match.group(1)), tz=zone('UTC')):%a %d %b %H:%M} UTC"

    return re.sub(r"<t:(\d+):[A-Za-z]>", stamp, text)


def _shown(text: str) -> str:
    """Text from Discord as the terminal may print it: control characters as escapes, markup escaped."""
    return escape(terminal_safe(text))


def _print_digest(console: Console, message: dict[str, Any], chart: Path) -> None:
    embed = message["embeds"][0]
    console.rule(f"[bold]#digests[/]: {_shown(embed.get('title', ''))}")
    console.print(_shown(embed.get("description", "").replace("```", "").strip()))
    for field in embed.get("fields", []):
        value = field["value"].split("\n[Jump", 1)[0]
        console.print(f"[bold]{_shown(field['name'].replace('`', ''))}[/]\n  {_shown(value)}")
    console.print(f"[dim]{_shown(embed.get('footer', {}).get('text', ''))} · chart: {chart}[/]")
