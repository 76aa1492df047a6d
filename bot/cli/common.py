"""What every command shares: the ``--config`` option, one logging setup that honours ``general.log_level`` and
``general.log_format``, and one way to fail.

The one way to fail: every ``stancebot`` command is a :class:`Command` (or a :class:`Group` of them), whose
``main`` turns a mistake the user can fix (a bad option, a bad file, a bad setting, an unreachable database, a file
that cannot be read or written) into one line on stderr, ``stancebot: <what is wrong, naming the input>``, and exit
status 2. Nothing else prints a traceback but a bug.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
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


def one_line(text: str) -> str:
    """``text`` on one line (messages quote user input, which may hold line breaks)."""
    return " ".join(text.split())


def fail(message: str) -> NoReturn:
    """End the command with one clear line on stderr and exit status 2."""
    click.echo(f"stancebot: {one_line(message)}", err=True)
    sys.exit(2)


def describe_os_error(exc: OSError, doing: str = "") -> str:
    """An :class:`OSError` as a sentence naming the file: ``cannot write out/x.csv: Permission denied``."""
    reason = exc.strerror or exc.__class__.__name__
    target = f" {exc.filename}" if exc.filename is not None else ""
    head = f"{doing}{target}" if doing else (f"{exc.filename}" if exc.filename is not None else "")
    return f"{head}: {reason}" if head else str(reason)


@contextmanager
def user_errors(doing: str = "") -> Iterator[None]:
    """Turn what a user can fix into :func:`fail`: a :class:`StancebotError`, or an :class:`OSError` (named as
    ``doing FILE: reason``, e.g. ``doing="cannot write"``)."""
    try:
        yield
    except StancebotError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(describe_os_error(exc, doing))


class Command(click.Command):
    """A ``stancebot`` command: its errors end in one line and status 2 (see the module docstring)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command as click does, with click's usage errors and the user's mistakes as one line."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            with user_errors():
                code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else (prog_name or "stancebot")
            sub = path.partition(" ")[2]
            fail(f"{sub + ': ' if sub else ''}{exc.format_message()} (see `{path} --help`)")
        except click.ClickException as exc:
            fail(exc.format_message())
        except (click.Abort, KeyboardInterrupt):
            click.echo("stancebot: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


class Group(Command, click.Group):
    """A ``stancebot`` command group: its subcommands are :class:`Command`\\ s."""

    command_class = Command
    group_class = type


def settings_from(config: Path | None) -> Settings:
    """Load settings (``config.toml`` if present) and set up logging as they say; fail with one line on a bad
    config."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    with user_errors():
        settings = load_settings(config)
    setup_logging(settings.general.log_level, settings.general.log_format)
    return settings


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn the errors users can fix into one clear line and exit status 2."""
    with user_errors():
        return asyncio.run(main())
