"""Model commands for the CLI: ``stancebot train`` and ``stancebot evaluate`` (registered in ``bot.__main__``)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
