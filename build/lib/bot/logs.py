"""The one logging setup: the command line and the sandbox's bot processes call it with ``general.log_level`` and
``general.log_format``."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure logging once on stderr: readable lines (``text``) or one JSON object per line (``json``, for a log
    collector: ``time``, ``level``, ``logger``, ``message`` and any ``extra`` fields); discord.py's HTTP chatter at
    WARNING."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("discord.http", "discord.gateway", "discord.client", "aiohttp.access", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
