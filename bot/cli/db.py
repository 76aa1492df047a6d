"""``stancebot db upgrade | downgrade``: the schema (Alembic migrations; the bot also upgrades at start).

A downgrade drops tables and the data in them, so it needs an explicit revision, says what it will undo, and asks
for confirmation (``--yes`` for scripts; without a terminal and without ``--yes`` it refuses)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy import make_url

from bot.cli.common import Group, config_option, fail, run_async, settings_from, user_errors
from bot.config import Settings


@click.group(cls=Group)
def db() -> None:
    """Database schema (Alembic migrations; the bot also upgrades at start)."""


def _url(settings: Settings, database: str | None, *, must_exist: bool) -> str:
    from bot.storage.db import check_url

    with user_errors():
        return check_url(database or settings.database.url, must_exist=must_exist)


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

    async def _main() -> None:
        engine = storage.make_engine(url)
        try:
            with storage.database_errors(url):
                await storage.upgrade(engine, target)
        finally:
            await engine.dispose()

    run_async(_main)
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

    async def _current() -> str | None:
        engine = storage.make_engine(url)
        try:
            with storage.database_errors(url):
                return await storage.current_revision(engine)
        finally:
            await engine.dispose()

    current = run_async(_current)
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

    async def _main() -> None:
        engine = storage.make_engine(url)
        try:
            with storage.database_errors(url):
                await storage.downgrade(engine, target)
        finally:
            await engine.dispose()

    run_async(_main)
    click.echo(f"Database schema downgraded to {target}.")
