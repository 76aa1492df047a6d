"""``stancebot db upgrade | downgrade``: the schema (Alembic migrations; the bot also upgrades at start).

A downgrade drops tables and the data in them, so it needs an explicit revision, says what it will undo, and asks
for confirmation (``--yes`` for scripts; without a terminal and without ``--yes`` it refuses)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click
from sqlalchemy import make_url

from bot.cli.common import Group, config_option, fail, run_async, settings_from, user_errors
from bot.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")


@click.group(cls=Group)
def db() -> None:
    """Database schema (Alembic migrations; the bot also upgrades at start)."""


def _url(settings: Settings, database: str | None, *, must_exist: bool) -> str:
    from bot.storage.db import check_url

    with user_errors():
        return check_url(database or settings.database.url, must_exist=must_exist)


def _on_database(url: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` on an engine for ``url``; an unreachable database is one clear line, the engine always closed."""
    from bot.storage import db as storage

    async def _main() -> T:
        engine = storage.make_engine(url)
        try:
            with storage.database_errors(url):
                return await work(engine)
        finally:
            await engine.dispose()

    return run_async(_main)


database_option = click.option(
    "--database", default=None, help="Database URL (default: database.url from the settings)."
)


@db.command("upgrade")
@config_option
@database_option
@click.argument("revision", default="head")
def db_upgrade(config: Path | None, database: str | None, revision: str) -> None:
    """Upgrade the schema to REVISION (default head)."""
    from bot.storage import db as storage

    settings = settings_from(config)
    url = _url(settings, database, must_exist=False)
    with user_errors():
        target = storage.known_revision(revision)
    _on_database(url, lambda engine: storage.upgrade(engine, target))
    click.echo(f"Database schema upgraded to {target}.")


@db.command("downgrade")
@config_option
@database_option
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
def db_downgrade(config: Path | None, database: str | None, revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION (a revision id, or base: drops every table). Deletes the data in the
    tables it drops: says what it will undo and asks first (--yes to skip the question)."""
    from bot.storage import db as storage

    settings = settings_from(config)
    url = _url(settings, database, must_exist=True)
    with user_errors():
        target = storage.known_revision(revision, allow=("base",))
    shown = make_url(url).render_as_string(hide_password=True)
    current = _on_database(url, storage.current_revision)
    undone = storage.migrations_between(current, target)
    if not undone:
        click.echo(f"Database {shown} is at {current or 'base'}; nothing to downgrade to {target}.")
        return
    click.echo(f"This downgrades the schema of {shown} from {current} to {target}, undoing:", err=True)
    for rev, doc in undone:
        click.echo(f"  {rev} {doc}", err=True)
    click.echo("The tables and columns these migrations added are dropped, with the data in them.", err=True)
    if not yes:
        if not sys.stdin.isatty():
            fail("db downgrade deletes data: pass --yes to confirm (no terminal to ask on).")
        if not click.confirm("Downgrade?", default=False, err=True):
            fail("db downgrade cancelled; nothing changed.")
    _on_database(url, lambda engine: storage.downgrade(engine, target))
    click.echo(f"Database schema downgraded to {target}.")
