"""``stancebot run`` (the bot on Discord) and ``stancebot sandbox`` (the bot on a local Discord-compatible server)."""

from __future__ import annotations

from pathlib import Path

import click

from bot.cli.common import config_option, fail, run_async, settings_from
from bot.config import read_token
from bot.core.errors import StancebotError


@click.command()
@config_option
def run(config: Path | None) -> None:
    """Connect to Discord with the token from DISCORD_TOKEN or bot.token_file."""
    settings = settings_from(config)
    try:
        token = read_token(settings)
    except StancebotError as exc:
        fail(str(exc))

    async def _main() -> None:
        from bot.runtime import build_runtime
        from bot.storage.db import database_errors

        with database_errors(settings.database.url):
            runtime = await build_runtime(settings)
        try:
            await runtime.bot.start(token)
        finally:
            await runtime.aclose()

    run_async(_main)


@click.command()
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
@click.option("--rate-limits", is_flag=True, help="Apply Discord's REST rate limits (the bot waits as on Discord).")
def sandbox(
    config: Path | None,
    replies: Path | None,
    interactive: bool,
    database: str | None,
    days: int,
    period: str | None,
    rate_limits: bool,
) -> None:
    """Run the real bot against a local Discord-compatible server: no token, no network."""
    settings = settings_from(config)

    async def _main() -> None:
        if days:
            from bot.sandbox.days import run_days

            await run_days(settings, days, period=period, database=database)
            return
        from bot.sandbox.runner import run_sandbox

        await run_sandbox(
            settings, replies=replies, interactive=interactive, database=database, rate_limits=rate_limits
        )

    run_async(_main)
