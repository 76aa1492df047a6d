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
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from bot.cli.common import Command, config_option, run_async, settings_from, user_errors
from bot.config import Settings
from bot.core.chart import render_chart
from bot.core.digest import Digest, render_markdown, render_terminal
from bot.core.errors import StancebotError
from bot.core.export import SafeCsvWriter
from bot.core.files import atomic_writer, write_bytes_atomic, write_text_atomic
from bot.core.periods import PERIOD_KINDS, Cadence, as_utc, parse_kind, zone
from bot.core.prompts import Prompt, PromptCatalog
from bot.core.stance import StanceClassifier
from bot.core.tally import Tally, render_table
from bot.core.text import reply_text, terminal_safe
from bot.storage.db import check_url, sqlite_url

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


#: Discord ids are positive 64-bit numbers; the database stores them as signed 64-bit integers.
MAX_ID = 2**63 - 1
#: Message times an export can hold: from Discord's epoch (2015) to well after today.
EARLIEST, LATEST = datetime(2015, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def _snowflake(value: Any, what: str) -> int:
    """A Discord id given as a number or a string of digits (as DiscordChatExporter writes them)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value.strip()):
        number = int(value)
    if number is None or not 0 <= number <= MAX_ID:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ExportError(f"{what} {shown} is not a Discord id.")
    return number


def _text(value: Any, what: str) -> str:
    """A text field (``null`` is empty, never the word ``None``); anything else is a mistake, named."""
    try:
        return reply_text(value)
    except TypeError:
        raise ExportError(f"{what} must be text, not {type(value).__name__}.") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExportError(f"{what} must be an object, not {type(value).__name__}.")
    return value


def _timestamp(value: Any, what: str) -> datetime:
    try:
        when = as_utc(datetime.fromisoformat(_text(value, what).replace("Z", "+00:00")))
    except ValueError:
        raise ExportError(f"{what} is not a valid time.") from None
    if not EARLIEST <= when < LATEST:
        raise ExportError(f"{what} {when:%Y-%m-%d} is not a time a Discord message can have.")
    return when


def _load_json(path: Path) -> Any:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"{path.name} is not UTF-8 text (byte {exc.start + 1}); DiscordChatExporter writes UTF-8, export it again."
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path.name} is not JSON ({exc.msg} at line {exc.lineno}).") from None
    except RecursionError:
        raise ExportError(f"{path.name} is nested too deeply to be an export.") from None


def read_export(path: Path) -> ChannelExport:
    """Parse a DiscordChatExporter JSON export; raise :class:`ExportError` naming what is missing or malformed."""
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise ExportError(
            f"{path.name} has no 'messages' list: export the channel with DiscordChatExporter using --format Json."
        )
    guild, channel = _object(data.get("guild"), "guild"), _object(data.get("channel"), "channel")
    messages, skipped = [], 0
    for number, raw in enumerate(data["messages"], start=1):
        where = f"{path.name}: message {number}"
        if not isinstance(raw, dict) or not isinstance(raw.get("author"), dict):
            raise ExportError(f"{where} has no author.")
        author = raw["author"]
        kind = _text(raw.get("type", "Default"), f"{where} type")
        if kind not in MEMBER_MESSAGE_TYPES or author.get("isBot") is True:
            skipped += 1
            continue
        if "timestamp" not in raw:
            raise ExportError(f"{where} has no valid timestamp.")
        author_id = _snowflake(author.get("id"), f"{where} author id")
        name = _text(author.get("nickname"), f"{where} author nickname") or _text(
            author.get("name"), f"{where} author name"
        )
        messages.append(
            ExportMessage(
                id=_snowflake(raw.get("id"), f"{where} id"),
                author_id=author_id,
                author_name=name or str(author_id),
                timestamp=_timestamp(raw["timestamp"], f"{where} timestamp"),
                content=_text(raw.get("content"), f"{where} content"),
            )
        )
    messages.sort(key=lambda m: (m.timestamp, m.id))
    return ChannelExport(
        guild_id=_snowflake(guild.get("id", 0), "guild id"),
        guild_name=_text(guild.get("name"), "guild name"),
        channel_id=_snowflake(channel.get("id", 0), "channel id"),
        channel_name=_text(channel.get("name"), "channel name"),
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
    export_path: Path | ChannelExport,
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
    if isinstance(export_path, ChannelExport):
        export = export_path
    else:
        export = await asyncio.to_thread(read_export, export_path)
    if not export.messages:
        raise ExportError("The export holds no member messages to analyse.")
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
    """Write the three files, each whole or not at all."""
    write_text_atomic(md_path, render_markdown(digest, chart=chart_path.name))
    write_bytes_atomic(chart_path, render_chart(digest))
    with atomic_writer(csv_path) as handle:
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


#: What ``analyze`` writes into its output folder (the database only when it makes its own).
OUTPUTS = ("analysis.db", "stances.csv", "chart.png", "digest.md")


def staging_folder(out: Path) -> Path:
    """A fresh hidden folder inside ``out`` where a run builds its files (``out`` is created if missing)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        return Path(tempfile.mkdtemp(prefix=".analyze-", suffix=".part", dir=out))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(out)) from None


def publish(staging: Path, out: Path) -> None:
    """Move a finished run's files from ``staging`` over the previous ones in ``out`` (each by an atomic rename
    in the same folder), then remove ``staging``."""
    for name in OUTPUTS:
        if (staging / name).exists():
            os.replace(staging / name, out / name)
    shutil.rmtree(staging, ignore_errors=True)


#: Models loaded in this process, by settings and prompt (a process that analyses several exports loads each once).
_CLASSIFIERS: dict[tuple[str, str], StanceClassifier] = {}


def _classifier_for(settings: Settings, prompt: Prompt) -> StanceClassifier:
    from bot.config import model_registry

    key = (settings.model_dump_json(), repr(prompt))
    if key not in _CLASSIFIERS:
        _CLASSIFIERS[key] = model_registry(settings).classifier(prompt)
    return _CLASSIFIERS[key]


@click.command("analyze", cls=Command)
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
    """Classify every message of a DiscordChatExporter JSON EXPORT and write digest.md, chart.png, stances.csv.

    The new files are built in a hidden folder inside OUT and replace the previous ones only once all of them are
    written: a failed run leaves the previous analysis as it was."""
    settings = settings_from(config)
    with user_errors():
        catalog = PromptCatalog.from_dir(settings.prompts_dir())
        prompt = catalog.get(prompt_id)
        zone(tz or settings.general.timezone)
        parsed = read_export(export)
        if not parsed.messages:
            raise ExportError(f"{export.name} holds no member messages to analyse.")
        if database is not None:
            check_url(database)
    out = out_dir or export.with_name(f"{export.stem}-stances")
    with user_errors("cannot write --out"):
        staging = staging_folder(out)
    try:
        result = _analyze_into(settings, parsed, prompt, staging, database, tz, period, history, count_mode, batch_size)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replaced = [name for name in OUTPUTS if (out / name).exists() and (staging / name).exists()]
    if replaced:
        click.echo(f"Replacing the previous {', '.join(replaced)} in {out}.", err=True)
    with user_errors("cannot write --out"):
        publish(staging, out)
    result = replace(
        result,
        out_dir=out,
        database_url=database or sqlite_url(out / "analysis.db"),
        csv_path=out / "stances.csv",
        markdown_path=out / "digest.md",
        chart_path=out / "chart.png",
    )
    report(result, Console(highlight=False, soft_wrap=True))


def _analyze_into(
    settings: Settings,
    export: ChannelExport,
    prompt: Prompt,
    staging: Path,
    database: str | None,
    tz: str | None,
    period: str,
    history: int,
    count_mode: str | None,
    batch_size: int,
) -> Analysis:
    """Classify and store ``export`` with the files (and, unless ``database`` is given, a fresh database) in
    ``staging``."""
    console = Console(stderr=True, highlight=False)
    url = database or sqlite_url(staging / "analysis.db")

    async def _main() -> Analysis:
        console.print(f"Loading the stance model for [bold]{prompt.id}[/] …")
        classifier = await asyncio.to_thread(_classifier_for, settings, prompt)
        return await analyze_export(
            export,
            prompt,
            out_dir=staging,
            classifier=classifier,
            database_url=url,
            tz=tz or settings.general.timezone,
            period=period,
            history=history,
            count_mode=count_mode or settings.bot.count_mode,
            batch_size=batch_size,
            console=console,
        )

    return run_async(_main)


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
