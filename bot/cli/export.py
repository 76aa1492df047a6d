"""``stancebot export``: a prompt's replies and stances (CSV/JSON), or moderators' corrections as training data.

Reads the configured database through the same repository
as the bot; writes to a file or to standard output.

* ``stancebot export --prompt alliance --guild 123 --format csv --out alliance.csv``
* ``stancebot export --corrections [--prompt alliance] --out corrections.jsonl``: JSONL lines
  ``{text, label, prompt, source: "moderator"}``, the format of ``models/data/*.jsonl`` that ``stancebot train``
  reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import inspect

from bot.cli.common import Command, config_option, fail, run_async, settings_from, user_errors
from bot.core.errors import StancebotError
from bot.core.export import FORMATS, corrections_to_jsonl, render_rows
from bot.core.files import write_text_atomic
from bot.core.text import terminal_safe
from bot.storage.db import check_url, database_errors, make_engine, make_sessionmaker
from bot.storage.repository import Repository


async def export_text(
    url: str, *, prompt: str | None, guild_id: int | None, fmt: str, corrections: bool
) -> tuple[str, int]:
    """The export as text, and how many rows it holds (never creates a database: a missing SQLite file is an
    error)."""
    if not corrections and (prompt is None or guild_id is None):
        raise StancebotError("Give --prompt and --guild (or --corrections).")
    check_url(url, must_exist=True)
    engine = make_engine(url)
    try:
        with database_errors(url):
            async with engine.connect() as conn:
                tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        if "audit_log" not in tables:
            raise StancebotError("The database has no up-to-date Stancebot schema; run `stancebot db upgrade`.")
        repo = Repository(make_sessionmaker(engine))
        if corrections:
            found = await repo.moderation.corrections(prompt)
            return corrections_to_jsonl(found), len(found)
        assert prompt is not None and guild_id is not None
        rows = await repo.privacy.export_rows(prompt, guild_id)
        return render_rows(rows, fmt), len(rows)
    finally:
        await engine.dispose()


@click.command("export", cls=Command)
@click.option("--prompt", "prompt", default=None, help="The prompt id, e.g. alliance (optional with --corrections).")
@click.option(
    "--guild",
    "guild_id",
    type=click.IntRange(0, 2**63 - 1),
    default=None,
    help="The server (guild) id whose replies to export.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("--corrections", is_flag=True, help="Export moderators' corrections as JSONL training data instead.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="File (default: stdout).")
@click.option("--database", default=None, help="Database URL (default: database.url from the settings).")
@config_option
def export(
    prompt: str | None,
    guild_id: int | None,
    fmt: str,
    corrections: bool,
    out: Path | None,
    database: str | None,
    config: Path | None,
) -> None:
    """Export a prompt's replies and stances, or moderators' corrections for `stancebot train`."""
    settings = settings_from(config)
    url = database or settings.database.url
    if out is not None and not out.parent.is_dir():
        fail(f"--out {out}: the folder {out.parent} does not exist.")
    text, count = run_async(
        lambda: export_text(url, prompt=prompt, guild_id=guild_id, fmt=fmt, corrections=corrections)
    )
    if out is None:
        # Data for a pipe as it is; on a terminal, members' control characters are shown as escapes.
        click.echo(terminal_safe(text) if sys.stdout.isatty() else text, nl=False)
    else:
        with user_errors("cannot write --out"):
            write_text_atomic(out, text)
        what = "corrections" if corrections else "replies"
        click.echo(f"Wrote {count} {what} to {out}.", err=True)
