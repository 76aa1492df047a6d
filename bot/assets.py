"""The files the package ships beside its code: prompts, labelled data, the trained models, the migrations and the
example configuration.

They live in the checkout's ``models/``, ``migrations/`` and ``config.example.toml``; ``bot/_assets/`` links to them,
so an editable install reads the checkout's files and a wheel (``pip install .``, ``pip wheel .``) carries copies.
Every path here comes from :mod:`importlib.resources`, never from where the checkout is.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def assets_dir() -> Path:
    """The package's asset folder (``bot/_assets``), as a real path on disk."""
    return Path(str(files("bot") / "_assets"))


def models_dir() -> Path:
    """``models/``: prompts, labelled data and splits, the shipped models and their card."""
    return assets_dir() / "models"


def prompts_dir() -> Path:
    """The seed prompts (``models/prompts/*.toml``)."""
    return models_dir() / "prompts"


def data_dir() -> Path:
    """The labelled replies and their committed splits (``models/data``)."""
    return models_dir() / "data"


def shipped_models_dir() -> Path:
    """The trained models the bot runs out of the box (``models/shipped``, see :mod:`bot.core.shipped`)."""
    return models_dir() / "shipped"


def migrations_dir() -> Path:
    """The Alembic migrations that own the schema."""
    return assets_dir() / "migrations"


def example_config() -> str:
    """The text of ``config.example.toml``: every setting, its default and what it does."""
    return (assets_dir() / "config.example.toml").read_text(encoding="utf-8")
