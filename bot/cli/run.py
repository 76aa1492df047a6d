"""``stancebot run`` (the bot on Discord) and ``stancebot sandbox`` (the bot on a local Discord-compatible server)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from bot.cli.common import Command, config_option, run_async, settings_from, user_errors
from bot.config import read_token
from bot.core.errors import StancebotError
from bot.storage.db import check_url


@click.command(cls=Command)
@config_option
def run(config: Path | None) -> None:
    """Connect to Discord with the token from DISCORD_TOKEN or bot.token_file.

    SIGTERM or SIGINT stops it gracefully (within general.shutdown_timeout_s): exit status 0."""
    settings = settings_from(config)
    with user_errors():
        token = read_token(settings)
        check_url(settings.database.url)

    async def _main() -> bool:
        import discord

        from bot.runtime import build_runtime, serve
        from bot.storage.db import database_errors

        with database_errors(settings.database.url):
            runtime = await build_runtime(settings)
        try:
            return await serve(runtime, token)
        except discord.LoginFailure:
            raise StancebotError("Discord refused the token (DISCORD_TOKEN or bot.token_file): check it.") from None

    if not run_async(_main):
        sys.exit(1)


@click.command(cls=Command)
@config_option
@click.option(
    "--replies",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="JSONL of replies to play ({prompt, author, text}); default: the bundled sample.",
)
@click.option("--interactive", is_flag=True, help="Type replies yourself as a member.")
@click.option("--database", default=None, help="Database URL (default: a fresh SQLite file in a temp folder).")
@click.option(
    "--days",
    type=click.IntRange(0, 366),
    default=0,
    help="Simulate N days of replies under a fake clock and show the digests.",
)
@click.option(
    "--period",
    type=click.Choice(["daily", "weekly", "monthly"]),
    default=None,
    help="With --days: digest period (default: weekly from 14 days, else daily).",
)
def sandbox(
    config: Path | None,
    replies: Path | None,
    interactive: bool,
    database: str | None,
    days: int,
    period: str | None,
) -> None:
    """Run the real bot against a local Discord-compatible server: no token, no network.

    SIGTERM or SIGINT stops it gracefully (the reply in flight is stored): exit status 0."""
    settings = settings_from(config)
    with user_errors():
        if database is not None:
            check_url(database)
        if replies is not None:
            from bot.sandbox.runner import load_replies

            load_replies(replies)  # a bad file fails here, before anything starts

    async def _main() -> None:
        from bot.runtime import StopSignals

        if days:
            from bot.sandbox.days import run_days

            work: Coroutine[Any, Any, object] = run_days(settings, days, period=period, database=database)
        else:
            from bot.sandbox.runner import run_sandbox

            work = run_sandbox(settings, replies=replies, interactive=interactive, database=database)
        task: asyncio.Future[object] = asyncio.ensure_future(work)
        with StopSignals(on_signal=task.cancel) as signals:
            try:
                await task
            except asyncio.CancelledError:
                if not signals.received.is_set():
                    raise
                click.echo(f"Sandbox stopped ({signals.name}).", err=True)

    run_async(_main)
