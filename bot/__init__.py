"""Stancebot: a Discord bot that posts news questions and tallies the stances members take."""

import os

__version__ = "0.1.0"

# ONNX Runtime (1.32) otherwise writes a device id and a telemetry event store under ~/.cache/Microsoft when it is
# imported; a bot that promises members what it stores keeps that off (set ORT_DISABLE_TELEMETRY=0 to allow it).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
