"""The command line, one module a command group: ``run`` and ``sandbox`` (:mod:`bot.cli.run`), ``db``
(:mod:`bot.cli.db`), ``analyze`` (:mod:`bot.cli.analyze`), ``export`` (:mod:`bot.cli.export`), ``train`` and
``evaluate`` (:mod:`bot.cli_model`). Every command takes the same ``--config`` and sets up logging and fails the
same way (:mod:`bot.cli.common`). The commands are listed here, once."""

from __future__ import annotations

import click

from bot.cli.analyze import analyze
from bot.cli.db import db
from bot.cli.export import export
from bot.cli.run import run, sandbox
from bot.cli_model import evaluate, train

COMMANDS: tuple[click.Command, ...] = (run, sandbox, db, analyze, export, train, evaluate)


def build() -> click.Group:
    """The ``stancebot`` command with every subcommand."""
    group = click.Group(
        "stancebot", help="Stancebot: posts discussion prompts on Discord and tallies the stances members take."
    )
    for command in COMMANDS:
        group.add_command(command)
    return group


main = build()
