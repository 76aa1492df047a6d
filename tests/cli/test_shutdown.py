"""SIGTERM stops ``stancebot run`` and ``stancebot sandbox`` gracefully: exit status 0 within
``general.shutdown_timeout_s``, and every reply the bot received is stored (real processes, the real models, the
loopback Discord server)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.loadgen import build_world, count_replies, post_prompt, send_replies, wait_for_counts
from bot.sandbox.server import LoopbackDiscord
from bot.storage.db import sqlite_url
from tests.cli.helpers import ROOT, clean_env

SHUTDOWN_S = 8.0
#: What a process needs beyond the shutdown itself to be gone (the interpreter's exit).
EXIT_MARGIN_S = 2.0

#: ``stancebot run``, pointed at the loopback server the way the sandbox points discord.py at it.
RUN = """
import sys, yarl, discord.gateway, discord.http
discord.http.Route.BASE = sys.argv[1]
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])
from bot.cli import main
main(["run"], prog_name="stancebot")
"""


def _env(tmp_path: Path, db_url: str | None) -> dict[str, str]:
    return clean_env(
        DISCORD_TOKEN="sandbox-token",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        **({"STANCEBOT_DATABASE_URL": db_url} if db_url else {}),
        STANCEBOT_PIPELINE_SPOOL_DIR=str(tmp_path / "spool"),
        STANCEBOT_MODEL_BUILD_DIR=str(tmp_path / "no-models"),
        STANCEBOT_MODEL_MAX_WAIT_MS="5",
        STANCEBOT_GENERAL_LOG_FORMAT="json",
        STANCEBOT_GENERAL_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_S),
    )


class Proc:
    """A child process whose stderr (JSON log lines) is collected as it comes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.logs: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.stderr.append(text)
            if text.startswith("{"):
                self.logs.append(json.loads(text))

    async def logged(self, fragment: str, timeout: float = 120) -> dict[str, Any]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [r for r in self.logs if fragment in r.get("message", "")]
            if found:
                return found[-1]
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"no log line with {fragment!r}:\n" + "\n".join(self.stderr[-30:]))

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), SHUTDOWN_S + 30)
        took = time.monotonic() - started
        await self._reader
        return code, took


@asynccontextmanager
async def run_bot(server: LoopbackDiscord, env: dict[str, str]) -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN, server.base_url, server.gateway_url,
        env=env, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    child = Proc(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_sigterm_during_a_burst_stops_run_cleanly(tmp_path: Path) -> None:
    db_url = sqlite_url(tmp_path / "bot.db")
    async with LoopbackDiscord() as server:
        world = build_world(server, members=60)
        async with run_bot(server, _env(tmp_path, db_url)) as bot:
            await bot.logged("Connected as")
            await post_prompt(world, "alliance")
            await post_prompt(world, "defense")
            await send_replies(world, 200, rate=150)
            burst = asyncio.create_task(send_replies(world, 400, rate=150, start=200))
            code, took = await bot.terminate()  # mid-burst: replies queued, being stored and classified
            summary = await bot.logged("Stopped in")
        assert code == 0, "\n".join(bot.stderr[-30:])
        assert took < SHUTDOWN_S + EXIT_MARGIN_S, took
        print(f"\nrun: exit {code} {took:.2f} s after SIGTERM; {summary['replies']}")
        await burst  # the rest of the burst goes out while the bot is down
        totals = summary["replies"]
        assert totals["received"] >= 200 - 10  # it was stopped in the middle, not before
        assert totals["received"] == totals["stored"] + totals["duplicates"] and totals["spooled"] == 0, totals
        counts = await count_replies(db_url, world.message_ids())
        assert counts.replies == totals["stored"]  # every reply it received is in the database
        assert not counts.twice()

        # Started again, it classifies what was left pending and reads the rest from the threads' history.
        async with run_bot(server, _env(tmp_path, db_url)) as again:
            await again.logged("Connected as")
            ids = world.message_ids()
            counts = await wait_for_counts(db_url, ids, timeout=120)
            code, took = await again.terminate()
        assert counts.exactly_once(ids), (counts.replies, counts.classified, counts.pending)
        assert code == 0 and took < SHUTDOWN_S + EXIT_MARGIN_S


@pytest.mark.slow
async def test_sigterm_stops_the_sandbox_with_every_reply_it_sent_stored(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    texts = [json.loads(line) for line in (ROOT / "bot/sandbox/sample_replies.jsonl").read_text().splitlines()]
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps(texts[i % len(texts)] | {"prompt": "alliance"}) for i in range(300)))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "sandbox", "--replies", str(replies), "--database", sqlite_url(db),
        env=_env(tmp_path, None), cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    out: list[str] = []
    try:
        while sum("→" in line for line in out) < 15:
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            assert line, "the sandbox ended before its replies"
            out.append(line.decode())
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(proc.communicate(), SHUTDOWN_S + 30)
        took = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
    text = "".join(out) + rest.decode()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert took < SHUTDOWN_S + 2.0 + EXIT_MARGIN_S, took  # + the sandbox's own wait for the reply it had just sent
    assert "Sandbox stopped (SIGTERM)" in err.decode()
    assert "Traceback" not in err.decode()
    sent = int(re.search(r"Stopping after (\d+) replies", text).group(1))  # type: ignore[union-attr]
    assert 15 <= sent < 300
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM replies").fetchone()[0]
    assert stored == sent
    print(f"\nsandbox: exit 0 {took:.2f} s after SIGTERM; {sent} replies sent, {stored} stored")
