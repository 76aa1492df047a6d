"""``stancebot db upgrade | downgrade``: the schema (Alembic migrations; the bot also upgrades at start)."""

from __future__ import annotations

from pathlib import Path

import click

from bot.cli.common import config_option, run_async, settings_from


@click.group()
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
