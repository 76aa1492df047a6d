"""``stancebot analyze EXPORT.json --prompt ID``: stance analysis of a DiscordChatExporter JSON export, no token.

Reads a channel or thread export (https://github.com/Tyrrrz/DiscordChatExporter, ``--format Json``), classifies
every member message with the prompt's model in batches under a progress bar, stores replies and stances in a
SQLite database through the same storage code as the bot, and writes ``digest.md``, ``chart.png`` and
``stances.csv`` (one row per message: id, author, timestamp, stance, confidence, whether it counts, text).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from bot.cli.common import config_option, fail, run_async, settings_from
from bot.config import Settings
from bot.core.chart import render_chart
from bot.core.digest import Digest, render_markdown, render_terminal
from bot.core.errors import StancebotError
from bot.core.export import SafeCsvWriter
from bot.core.periods import PERIOD_KINDS, Cadence, as_utc, parse_kind, zone
from bot.core.prompts import Prompt, PromptCatalog
from bot.core.stance import StanceClassifier
from bot.core.tally import Tally, render_table
from bot.core.text import reply_text, terminal_safe

log = logging.getLogger(__name__)

#: DiscordChatExporter message kinds that are something a member wrote (the rest are joins, pins, calls …).
MEMBER_MESSAGE_TYPES = frozenset({"Default", "Reply"})
CSV_COLUMNS = ("message_id", "author_id", "author", "timestamp", "stance", "confidence", "counted", "reason", "text")


class ExportError(StancebotError):
    """The file is not a DiscordChatExporter JSON export this command can read."""


@dataclass(frozen=True)
class ExportMessage:
    """One member message from an export."""

    id: int
    author_id: int
    author_name: str
    timestamp: datetime
    content: str


@dataclass(frozen=True)
class ChannelExport:
    """An export's guild, channel and member messages (oldest first); system and bot messages are counted only."""

    guild_id: int
    guild_name: str
    channel_id: int
    channel_name: str
    messages: list[ExportMessage]
    skipped: int


def _snowflake(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ExportError(f"{what} {value!r} is not a Discord id.") from None


def _content(value: Any, where: str) -> str:
    """A message's text: ``null`` is an empty message (attachments only), never the word ``None``."""
    try:
        return reply_text(value)
    except TypeError:
        raise ExportError(f"{where} has content that is not text.") from None


def read_export(path: Path) -> ChannelExport:
    """Parse a DiscordChatExporter JSON export; raise :class:`ExportError` naming what is missing."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path.name} is not JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ExportError(
            f"{path.name} has no 'messages' list: export the channel with DiscordChatExporter using --format Json."
        )
    guild, channel = data.get("guild") or {}, data.get("channel") or {}
    messages, skipped = [], 0
    for number, raw in enumerate(data["messages"], start=1):
        if not isinstance(raw, dict) or not isinstance(raw.get("author"), dict):
            raise ExportError(f"{path.name}: message {number} has no author.")
        author = raw["author"]
        if raw.get("type", "Default") not in MEMBER_MESSAGE_TYPES or author.get("isBot"):
            skipped += 1
            continue
        try:
            timestamp = as_utc(datetime.fromisoformat(str(raw["timestamp"]).replace("Z", "+00:00")))
        except (KeyError, ValueError):
            raise ExportError(f"{path.name}: message {number} has no valid timestamp.") from None
        messages.append(
            ExportMessage(
                id=_snowflake(raw.get("id"), f"message {number} id"),
                author_id=_snowflake(author.get("id"), f"message {number} author id"),
                author_name=str(author.get("nickname") or author.get("name") or author.get("id")),
                timestamp=timestamp,
                content=_content(raw.get("content"), f"{path.name}: message {number}"),
            )
        )
    messages.sort(key=lambda m: (m.timestamp, m.id))
    return ChannelExport(
        guild_id=_snowflake(guild.get("id", 0), "guild id"),
        guild_name=str(guild.get("name") or ""),
        channel_id=_snowflake(channel.get("id", 0), "channel id"),
        channel_name=str(channel.get("name") or ""),
        messages=messages,
        skipped=skipped,
    )


@dataclass(frozen=True)
class Analysis:
    """What ``analyze`` produced."""

    out_dir: Path
    database_url: str
    export: ChannelExport
    tally: Tally
    digest: Digest
    csv_path: Path
    markdown_path: Path
    chart_path: Path
    stored: int


def _batches(items: list[ExportMessage], size: int) -> Iterator[list[ExportMessage]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def progress_bar(console: Console) -> Progress:
    """The progress bar shown while classifying."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


async def analyze_export(
    export_path: Path,
    prompt: Prompt,
    *,
    out_dir: Path,
    classifier: StanceClassifier,
    database_url: str,
    tz: str = "UTC",
    period: str = "weekly",
    history: int = 8,
    count_mode: str = "member",
    batch_size: int = 64,
    console: Console | None = None,
) -> Analysis:
    """Classify and store every member message of an export, then write the digest, chart and CSV."""
    from bot.storage.db import database_errors, make_engine, make_sessionmaker, upgrade
    from bot.storage.records import NewReply
    from bot.storage.repository import Repository

    console = console or Console(stderr=True)
    export = await asyncio.to_thread(read_export, export_path)
    if not export.messages:
        raise ExportError(f"{export_path.name} holds no member messages to analyse.")
    cadence = Cadence(parse_kind(period), tz=zone(tz).key)
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    engine = make_engine(database_url)
    try:
        with database_errors(database_url):
            await upgrade(engine)
        repo = Repository(make_sessionmaker(engine), count_mode="reply" if count_mode == "reply" else "member")
        await repo.guilds.ensure_guild(export.guild_id, export.guild_name)
        await repo.prompts.sync_prompt(prompt)
        post = await repo.prompts.post_for_thread(export.channel_id) or await repo.prompts.record_post(
            prompt.id,
            guild_id=export.guild_id,
            channel_id=export.channel_id,
            message_id=export.channel_id,
            thread_id=export.channel_id,
            posted_by=None,
        )
        before = await repo.tallies.count_replies([m.id for m in export.messages])
        new_authors: set[int] = set()
        with progress_bar(console) as progress:
            task = progress.add_task("Classifying", total=len(export.messages), rate="")
            started = asyncio.get_running_loop().time()
            for batch in _batches(export.messages, batch_size):
                results = await asyncio.to_thread(classifier.classify, [m.content for m in batch])
                rows = [
                    (NewReply(post, m.id, m.author_id, m.content, m.timestamp), r)
                    for m, r in zip(batch, results, strict=True)
                ]
                new_authors |= await repo.writes.store_classified(post, rows, model_version=classifier.version)
                progress.advance(task, len(batch))
                elapsed = asyncio.get_running_loop().time() - started
                done = progress.tasks[0].completed
                progress.update(task, rate=f"{done / elapsed:,.0f} msg/s" if elapsed > 0 else "")
        console.print(f"Counting stances of {len(new_authors)} members …")
        await repo.writes.recount_authors(post, new_authors)
        tally = await repo.tallies.tally(prompt, export.guild_id)
        stances = await repo.tallies.current_stances(post)
        stored = await repo.tallies.count_replies([m.id for m in export.messages]) - before
        last = export.messages[-1].timestamp
        digest = await repo.digests.build_digest(
            prompt,
            export.guild_id,
            cadence.period_containing(last),
            cadence,
            history=history,
            now=last,
            model_note=f"model {classifier.version} · {len(export.messages)} messages from #{export.channel_name}",
        )
    finally:
        await engine.dispose()
    names = {m.author_id: m.author_name for m in export.messages}
    quotes = tuple(replace(q, author_name=names.get(q.author_id, "")) for q in digest.quotes)
    digest = replace(digest, quotes=quotes)
    csv_path, md_path, chart_path = out_dir / "stances.csv", out_dir / "digest.md", out_dir / "chart.png"
    await asyncio.to_thread(_write_outputs, digest, export, stances, csv_path, md_path, chart_path)
    return Analysis(out_dir, database_url, export, tally, digest, csv_path, md_path, chart_path, stored)


def _write_outputs(
    digest: Digest, export: ChannelExport, stances: dict[int, Any], csv_path: Path, md_path: Path, chart_path: Path
) -> None:
    md_path.write_text(render_markdown(digest, chart=chart_path.name), encoding="utf-8")
    chart_path.write_bytes(render_chart(digest))
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = SafeCsvWriter(handle)
        writer.writerow(CSV_COLUMNS)
        for m in export.messages:
            st = stances.get(m.id)
            writer.writerow(
                [
                    m.id,
                    m.author_id,
                    m.author_name,
                    m.timestamp.isoformat(),
                    st.label if st else "",
                    f"{st.confidence:.4f}" if st else "",
                    ("yes" if st.counted else "no") if st else "",
                    (st.reason or "") if st else "",
                    m.content,
                ]
            )


def _classifier_for(settings: Settings, prompt: Prompt) -> StanceClassifier:
    from bot.config import model_registry

    return model_registry(settings).classifier(prompt)


@click.command("analyze")
@click.argument("export", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--prompt", "prompt_id", required=True, help="The prompt whose stances to look for, e.g. alliance.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output folder (default: <EXPORT name>-stances next to the export).",
)
@click.option("--period", type=click.Choice(PERIOD_KINDS), default="weekly", show_default=True)
@click.option("--timezone", "tz", default=None, help="IANA zone for period boundaries (default: general.timezone).")
@click.option("--history", type=click.IntRange(2, 52), default=8, show_default=True, help="Periods in the trend.")
@click.option("--count-mode", type=click.Choice(["member", "reply"]), default=None, help="Default: bot.count_mode.")
@click.option("--database", default=None, help="Database URL (default: a fresh OUT/analysis.db).")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=64, show_default=True)
@config_option
def analyze(
    export: Path,
    prompt_id: str,
    out_dir: Path | None,
    period: str,
    tz: str | None,
    history: int,
    count_mode: str | None,
    database: str | None,
    batch_size: int,
    config: Path | None,
) -> None:
    """Classify every message of a DiscordChatExporter JSON EXPORT and write digest.md, chart.png, stances.csv."""
    settings = settings_from(config)
    try:
        catalog = PromptCatalog.from_dir(settings.prompts_dir())
        prompt = catalog.get(prompt_id)
        zone(tz or settings.general.timezone)
    except StancebotError as exc:
        fail(str(exc))
    out = out_dir or export.with_name(f"{export.stem}-stances")
    if database is None:
        (out / "analysis.db").unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        database = f"sqlite+aiosqlite:///{out / 'analysis.db'}"
    console = Console(stderr=True, highlight=False)

    async def _main() -> Analysis:
        console.print(f"Loading the stance model for [bold]{prompt.id}[/] …")
        classifier = await asyncio.to_thread(_classifier_for, settings, prompt)
        return await analyze_export(
            export,
            prompt,
            out_dir=out,
            classifier=classifier,
            database_url=database,
            tz=tz or settings.general.timezone,
            period=period,
            history=history,
            count_mode=count_mode or settings.bot.count_mode,
            batch_size=batch_size,
            console=console,
        )

    result = run_async(_main)
    report(result, Console(highlight=False, soft_wrap=True))


def report(result: Analysis, console: Console) -> None:
    """Print the digest and where the files are."""
    console.print(Text(terminal_safe(render_terminal(result.digest))))
    console.print()
    console.print(Text(terminal_safe("Overall tally (the whole export)\n" + render_table(result.tally))))
    console.print()
    console.print(
        Text(
            f"{len(result.export.messages)} messages analysed ({result.export.skipped} system or bot messages "
            f"skipped), {result.stored} stored in {result.database_url}\n"
            f"wrote {result.csv_path}, {result.markdown_path}, {result.chart_path}"
        )
    )
