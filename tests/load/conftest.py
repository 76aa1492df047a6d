"""Load and fault tests: the real bot in child processes against the loopback server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import tempfile
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.process import BotProcess
from bot.sandbox.server import LoopbackDiscord


@pytest.fixture
async def loopback() -> AsyncIterator[LoopbackDiscord]:
    """A loopback Discord server for bots in child processes (not installed in this process)."""
    async with LoopbackDiscord() as server:
        yield server


def bot_env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings of a test bot process: this database, no trained models, its own spool, metrics on a free port."""
    return {
        "STANCEBOT_DATABASE_URL": db_url,
        "STANCEBOT_MODEL_BUILD_DIR": str(tmp_path / "no-models"),
        "STANCEBOT_MODEL_SHIPPED": "false",
        "STANCEBOT_MODEL_MAX_WAIT_MS": "5",
        "STANCEBOT_PIPELINE_SPOOL_DIR": str(tmp_path / "spool"),
        "STANCEBOT_PIPELINE_RETRY_INITIAL_S": "0.2",
        "STANCEBOT_PIPELINE_RETRY_MAX_S": "2",
        "STANCEBOT_METRICS_ENABLED": "true",
        "STANCEBOT_METRICS_PORT": "0",
        "STANCEBOT_GENERAL_LOG_LEVEL": "INFO",
        **extra,
    }


@asynccontextmanager
async def bot_process(
    server: LoopbackDiscord, env: dict[str, str], log: Path, **kwargs: Any
) -> AsyncIterator[BotProcess]:
    """A started bot process (the stand-in encoder and the catch-up cog unless told otherwise); stopped on exit."""
    kwargs.setdefault("standin", True)
    kwargs.setdefault("extensions", ["bot.cogs.catchup"])
    proc = BotProcess.for_server(server, env, log_path=log, **kwargs)
    await proc.start()
    try:
        yield proc
    finally:
        await proc.stop()


def scrape(proc: BotProcess) -> dict[str, float]:
    """The child's Prometheus metrics as ``{name{labels}: value}``."""
    assert proc.metrics_url is not None
    with urllib.request.urlopen(proc.metrics_url + "/metrics", timeout=10) as answer:  # noqa: S310 - loopback
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def total(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over its labels."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


PG_BIN = Path(os.environ.get("STANCEBOT_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Cluster:
    """A throwaway PostgreSQL cluster of the test's own (``initdb`` in a temp folder, its own port), so stopping it
    never touches the machine's shared server. Runs as the ``postgres`` user when the tests run as root."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    async def _run(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._as_user, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.decode(errors='replace')[-2000:]}")

    async def init(self) -> None:
        """Create the cluster (trust authentication, no fsync: the test is about the bot, not the disk)."""
        await self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        await self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start"
        )

    async def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``: open connections are cut, as in a restart or a crash of the server)."""
        await self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def pg_cluster() -> AsyncIterator[Cluster]:
    """A started throwaway cluster; stopped and deleted afterwards."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN} (set STANCEBOT_PG_BIN)")
    folder = Path(tempfile.mkdtemp(prefix="stancebot-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
    cluster = Cluster(folder, _free_port())
    try:
        await cluster.init()
        await cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(RuntimeError):
            await cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
