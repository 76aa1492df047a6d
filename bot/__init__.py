"""Stancebot: a Discord bot that posts news questions and tallies the stances members take."""

from pathlib import Path

__version__ = "0.1.0"

#: The project checkout (the package is installed in editable mode; prompts and models live beside it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
