"""Command line: ``stancebot run | sandbox | db upgrade | db downgrade`` (and the model tools)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
from pythonjsonlogger.json import JsonFormatter

from bot.config import Settings, load_settings, read_token
from bot.core.errors import StancebotError

log = logging.getLogger("bot")
T = TypeVar("T")

DEFAULT_CONFIG = Path("config.toml")


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure logging once on stderr: readable lines (``text``) or one JSON object per line (``json``, for a log
    collector: ``time``, ``level``, ``logger``, ``message`` and any ``extra`` fields); discord.py's HTTP chatter at
    WARNING."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("discord.http", "discord.gateway", "discord.client", "aiohttp.access", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn the errors users can fix into one clear line and exit code 2."""
    try:
        return asyncio.run(main())
    except StancebotError as exc:
        click.echo(f"stancebot: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        click.echo(f"stancebot: {exc.strerror or exc}", err=True)
        sys.exit(2)


def settings_from(config: Path | None) -> Settings:
    """Load settings (``config.toml`` if present); exit with one line on a bad config."""
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    try:
        settings = load_settings(config)
    except StancebotError as exc:
        click.echo(f"stancebot: {exc}", err=True)
        sys.exit(2)
    setup_logging(settings.general.log_level, settings.general.log_format)
    return settings


config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Settings file (default: ./config.toml if present, else built-in defaults).",
)


@click.group()
def main() -> None:
    """Stancebot: posts discussion prompts on Discord and tallies the stances members take."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@main.command()
@config_option
def run(config: Path | None) -> None:
    """Connect to Discord with the token from DISCORD_TOKEN or bot.token_file."""
    settings = settings_from(config)
    try:
        token = read_token(settings)
    except StancebotError as exc:
        click.echo(f"stancebot: {exc}", err=True)
        sys.exit(2)

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


@main.command()
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
    """Run the real bot against a local Discord-compatible server: no token, no network."""
    settings = settings_from(config)

    async def _main() -> None:
        if days:
            from bot.sandbox.days import run_days

            await run_days(settings, days, period=period, database=database)
            return
        from bot.sandbox.runner import run_sandbox

        await run_sandbox(settings, replies=replies, interactive=interactive, database=database)

    run_async(_main)


@main.group()
def db() -> None:
    """Database schema (Alembic migrations; the bot also upgrades at start)."""


def _migrate(config: Path | None, revision: str, action: str) -> None:
    settings = settings_from(config)

    async def _main() -> None:
        from bot.storage import db as storage

        engine = storage.make_engine(settings.database.url)
        step = storage.upgrade if action == "upgraded" else storage.downgrade
        try:
            with storage.database_errors(settings.database.url):
                await step(engine, revision)
        finally:
            await engine.dispose()
        click.echo(f"Database schema {action} to {revision}.")

    run_async(_main)


@db.command("upgrade")
@config_option
@click.argument("revision", default="head")
def db_upgrade(config: Path | None, revision: str) -> None:
    """Upgrade the schema to REVISION (default head)."""
    _migrate(config, revision, "upgraded")


@db.command("downgrade")
@config_option
@click.argument("revision", default="base")
def db_downgrade(config: Path | None, revision: str) -> None:
    """Downgrade the schema to REVISION (default base: drops every table)."""
    _migrate(config, revision, "downgraded")


def _register_extra_commands() -> None:
    from bot.cli_analyze import COMMANDS as ANALYZE_COMMANDS
    from bot.cli_export import COMMANDS as EXPORT_COMMANDS
    from bot.cli_model import COMMANDS as MODEL_COMMANDS

    for cmd in [*MODEL_COMMANDS, *ANALYZE_COMMANDS, *EXPORT_COMMANDS]:
        main.add_command(cmd)


_register_extra_commands()

if __name__ == "__main__":
    main()
