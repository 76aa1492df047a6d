"""The real bot in a child process, connected to a :class:`LoopbackDiscord` running in the parent.

Load tests and benchmarks need what an in-process bot cannot give: a real ``SIGKILL`` in the middle of a burst, two
shard processes on one database, the bot's own event loop and memory measured apart from the server's, and the
time to ready from process start. The parent uses :class:`BotProcess`; the child is
``python -m bot.sandbox.process --api URL --gateway URL`` and takes its settings from ``STANCEBOT_*`` variables.

The child prints one JSON line per event on stdout (``{"event": "ready", ...}``); with ``--events FILE`` it appends
``<message id> <unix time>`` for every stance it records (benchmarks compute latency from it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

#: Environment every child gets: offline model loading, quiet tokenizers.
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class StandInEncoder:
    """A deterministic stand-in for the sentence encoder: a unit vector derived from a hash of the text.

    For tests about delivery, storage and faults, not about stances: it costs microseconds instead of the real
    model's ~10 ms per reply, so a 10,000-reply burst tests the pipeline rather than the CPU.
    """

    name = "standin-hash"
    dim = 384

    def __init__(self, cost_ms: float = 0.0) -> None:
        #: Simulated model time per text (sleeping, so like the model it leaves the event loop free).
        self.cost_ms = cost_ms

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Embed each text as a pseudo-random unit vector seeded by its hash."""
        if self.cost_ms:
            time.sleep(self.cost_ms * len(texts) / 1000)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
            row = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = row / np.linalg.norm(row)
        return out


# -- parent side ----------------------------------------------------------------------------------------------------


class BotProcess:
    """Starts, stops and kills one bot process against a loopback server."""

    def __init__(
        self,
        api_url: str,
        gateway_url: str,
        env: Mapping[str, str],
        *,
        standin: bool = False,
        standin_ms: float = 0.0,
        extensions: Sequence[str] = (),
        events: Path | None = None,
        log_path: Path | None = None,
        profile: Path | None = None,
    ) -> None:
        self.api_url = api_url
        self.gateway_url = gateway_url
        self.env = dict(env)
        self.standin = standin
        self.standin_ms = standin_ms
        self.extensions = list(extensions)
        self.events = events
        self.log_path = log_path
        self.profile = profile
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, Any] = {}
        #: The child's last line (``{"event": "closed", ...}`` after a clean stop, with its loop-lag figures).
        self.closed: dict[str, Any] = {}
        self.peak_rss_mb = 0.0
        self._lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def for_server(cls, server: Any, env: Mapping[str, str], **kwargs: Any) -> BotProcess:
        """A bot process for a started :class:`bot.sandbox.server.LoopbackDiscord`."""
        return cls(server.base_url, server.gateway_url, env, **kwargs)

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def metrics_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` of the child's metrics server, when it runs one."""
        port = self.ready.get("metrics_port")
        return f"http://127.0.0.1:{port}" if port else None

    async def start(self, timeout: float = 120.0) -> float:  # noqa: ASYNC109 - a plain deadline
        """Spawn the child and wait until the bot is ready; returns seconds from spawn to ready."""
        args = [sys.executable, "-m", "bot.sandbox.process", "--api", self.api_url, "--gateway", self.gateway_url]
        if self.standin:
            args += ["--standin", "--standin-ms", str(self.standin_ms)]
        for ext in self.extensions:
            args += ["--extension", ext]
        if self.events is not None:
            args += ["--events", str(self.events)]
        if self.profile is not None:
            args += ["--profile", str(self.profile)]
        env = {**os.environ, **CHILD_ENV, **self.env}
        self._log = self.log_path.open("ab") if self.log_path is not None else None
        started = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *args,
            env=env,
            stdin=asyncio.subprocess.PIPE,  # never written: the child stops when it closes (this process died)
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log if self._log is not None else asyncio.subprocess.DEVNULL,
        )
        self._reader = asyncio.create_task(self._read())
        try:
            self.ready = await asyncio.wait_for(self._expect("ready"), timeout)
        except TimeoutError:
            self.kill()
            raise
        return time.monotonic() - started

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            with contextlib.suppress(json.JSONDecodeError):
                data = json.loads(line)
                if data.get("event") == "closed":
                    self.closed = data
                await self._lines.put(data)
        await self._lines.put({"event": "exit"})

    async def _expect(self, event: str) -> dict[str, Any]:
        while True:
            line = await self._lines.get()
            if line.get("event") == event:
                return line
            if line.get("event") == "exit":
                raise RuntimeError(f"bot process exited before {event!r} (see {self.log_path})")

    def sample_rss(self) -> float:
        """The child's peak resident memory so far (VmHWM), in MB; also kept in :attr:`peak_rss_mb`."""
        if self.proc is None or self.proc.returncode is not None:
            return self.peak_rss_mb
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        return self.peak_rss_mb

    async def stop(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109 - a plain deadline
        """Ask the bot to close (SIGTERM: queued writes are finished) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.sample_rss()
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._cleanup()
        return self.proc.returncode or 0

    def reset_loop_lag(self) -> None:
        """Start a new measurement window for the child's longest event-loop stall (SIGUSR1)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGUSR1)

    def kill(self) -> None:
        """SIGKILL: the bot gets no chance to finish anything (a crash, an OOM kill, a pulled plug)."""
        if self.proc is not None and self.proc.returncode is None:
            self.sample_rss()
            self.proc.kill()

    async def wait_killed(self) -> None:
        """Wait for a killed child to be gone."""
        if self.proc is not None:
            await self.proc.wait()
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._reader, 5)
        if self._log is not None:
            self._log.close()
            self._log = None


# -- child side -----------------------------------------------------------------------------------------------------


def _watch_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Stop when stdin closes: the parent is gone (a crashed test must not leave a bot running)."""
    with contextlib.suppress(OSError):
        while os.read(0, 1024):  # unbuffered: a daemon thread must hold no buffer lock at interpreter exit
            pass
    with contextlib.suppress(RuntimeError):  # the loop is already closed: the bot stopped on its own
        loop.call_soon_threadsafe(stop.set)


def _open_events(path: str | None) -> IO[str] | None:
    return Path(path).open("a", encoding="utf-8") if path else None  # closed by _child


def _say(event: str, **data: Any) -> None:
    with contextlib.suppress(BrokenPipeError):  # the parent is gone
        sys.stdout.write(json.dumps({"event": event, "time": time.time(), **data}) + "\n")
        sys.stdout.flush()


async def _child(args: argparse.Namespace) -> int:
    began = time.monotonic()
    import discord
    import yarl

    import bot.app
    from bot.config import load_settings
    from bot.logs import setup_logging
    from bot.pipeline import ReplyOutcome
    from bot.runtime import build_runtime

    phases = {"imports_s": time.monotonic() - began}
    settings = load_settings(None)
    setup_logging(settings.general.log_level, settings.general.log_format)
    discord.http.Route.BASE = args.api
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(args.gateway)
    extra = tuple(ext for ext in args.extension if ext not in bot.app.EXTENSIONS)
    bot.app.EXTENSIONS = (*bot.app.EXTENSIONS, *extra)
    encoder: Any = StandInEncoder(args.standin_ms) if args.standin else None
    runtime = await build_runtime(settings, encoder=encoder)
    phases["runtime_s"] = time.monotonic() - began
    client = runtime.bot

    events = _open_events(args.events)

    async def record(outcome: ReplyOutcome) -> None:
        if events is not None:
            events.write(f"{outcome.reply.message_id} {time.time():.6f}\n")

    client.add_listener(record, "on_stance_recorded")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    threading.Thread(target=_watch_parent, args=(loop, stop), daemon=True).start()
    probe = runtime.observability.probe if runtime.observability is not None else None
    if probe is not None:
        loop.add_signal_handler(signal.SIGUSR1, probe.reset)
    runner = asyncio.create_task(client.start("sandbox-token"))
    stopper = asyncio.create_task(stop.wait())
    ready = asyncio.create_task(client.wait_until_ready())
    await asyncio.wait({runner, ready, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if ready.done() and not runner.done():
        server = runtime.observability.server if runtime.observability is not None else None
        phases["ready_s"] = time.monotonic() - began
        timings = {key: round(value, 2) for key, value in phases.items()}
        _say("ready", pid=os.getpid(), metrics_port=server.port if server is not None else None, **timings)
        while not stop.is_set() and not runner.done():
            await asyncio.wait({runner, stopper}, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            if events is not None:
                events.flush()
    lag = {"loop_lag_max_ms": probe.max_lag * 1000, "loop_lag_samples": probe.samples} if probe is not None else {}
    if runner.done() and runner.exception() is not None:
        sys.stderr.write(f"bot stopped: {runner.exception()!r}\n")
        code = 1
    await runtime.aclose()
    await asyncio.gather(runner, return_exceptions=True)
    for task in (stopper, ready):
        task.cancel()
    if events is not None:
        events.close()
    _say("closed", **lag)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point."""
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox.process", description=__doc__)
    parser.add_argument("--api", required=True, help="REST base URL of the loopback server (…/api/v10)")
    parser.add_argument("--gateway", required=True, help="Gateway URL of the loopback server (ws://…/gateway)")
    parser.add_argument("--standin", action="store_true", help="Use the stand-in encoder instead of the model")
    parser.add_argument("--standin-ms", type=float, default=0.0, help="Simulated model time per reply (ms)")
    parser.add_argument("--extension", action="append", default=[], help="Load this extension too (repeatable)")
    parser.add_argument("--events", help="Append '<message id> <unix time>' per recorded stance to this file")
    parser.add_argument("--profile", help="Profile the event loop's thread with cProfile into this file")
    args = parser.parse_args(argv)
    for key, value in CHILD_ENV.items():
        os.environ.setdefault(key, value)
    if not args.profile:
        return asyncio.run(_child(args))
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, _child(args))
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    sys.exit(main())
