"""The command line, one module a command group: ``run`` and ``sandbox`` (:mod:`bot.cli.run`), ``db``
(:mod:`bot.cli.db`), ``analyze`` (:mod:`bot.cli.analyze`), ``export`` (:mod:`bot.cli.export`), ``train``,
``evaluate`` and ``models`` (:mod:`bot.cli.model`, with :mod:`bot.cli.general` for the general model). Every
command takes the same ``--config``, sets up logging and fails the same way (:mod:`bot.cli.common`). The commands
are listed here, once."""

from __future__ import annotations

import click

from bot.cli.analyze import analyze
from bot.cli.common import Group
from bot.cli.db import db
from bot.cli.export import export
from bot.cli.model import evaluate, models, train
from bot.cli.run import run, sandbox

COMMANDS: tuple[click.Command, ...] = (run, sandbox, db, analyze, export, train, evaluate, models)


def build() -> click.Group:
    """The ``stancebot`` command with every subcommand."""
    group = Group(
        "stancebot", help="Stancebot: posts discussion prompts on Discord and tallies the stances members take."
    )
    for command in COMMANDS:
        group.add_command(command)
    return group


main = build()
