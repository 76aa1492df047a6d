"""What every command shares: the ``--config`` option, one logging setup that honours ``general.log_level`` and
``general.log_format``, and one way to fail (a clear line on stderr, exit status 2)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from bot.config import Settings, load_settings
from bot.core.errors import StancebotError
from bot.logs import setup_logging

T = TypeVar("T")

DEFAULT_CONFIG = Path("config.toml")

config_option = click.option(
    "--config",
    "config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Settings file (default: ./config.toml if present, else built-in defaults).",
)


def fail(message: str) -> NoReturn:
    """End the command with one clear line on stderr and exit status 2."""
    click.echo(f"stancebot: {message}", err=True)
    sys.exit(2)


def settings_from(config: Path | None) -> Settings:
    """Load settings (``config.toml`` if present) and set up logging as they say; fail with one line on a bad
    config."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    try:
        settings = load_settings(config)
    except StancebotError as exc:
        fail(str(exc))
    setup_logging(settings.general.log_level, settings.general.log_format)
    return settings


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn the errors users can fix into one clear line and exit status 2."""
    try:
        return asyncio.run(main())
    except StancebotError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        fail(str(exc.strerror or exc))
