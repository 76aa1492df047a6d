"""Observability: Prometheus metrics, an event-loop lag probe, ``/metrics`` and ``/health`` on a local port, JSON logs.

:class:`Metrics` owns its own registry (two bots in one process, as in the tests, never collide) and implements
:class:`bot.pipeline.PipelineObserver`. :class:`MetricsServer` is a small aiohttp app bound to ``metrics.host``
(127.0.0.1 by default: put a reverse proxy or the Prometheus agent on the same host, never the open internet).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bot.core.tasks import BackgroundTask

if TYPE_CHECKING:
    import discord

    from bot.config import Settings
    from bot.core.service import StanceService
    from bot.pipeline import ReplyOutcome, ReplyPipeline

log = logging.getLogger(__name__)

HealthFn = Callable[[], dict[str, Any]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan


class Metrics:
    """Every metric the bot exports; also the pipeline's observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.received = Counter("stancebot_replies_received", "Replies that reached the pipeline", registry=r)
        self.stored = Counter("stancebot_replies_stored", "Replies written to the database", registry=r)
        self.duplicates = Counter(
            "stancebot_replies_duplicate", "Replies not stored again (duplicate event or opted-out author)", registry=r
        )
        self.classified = Counter(
            "stancebot_replies_classified",
            "Model stances committed, by prompt and label",
            ["prompt", "label"],
            registry=r,
        )
        self.caught_up = Counter(
            "stancebot_replies_caught_up", "Replies found in channel history after downtime", registry=r
        )
        self.spooled = Counter(
            "stancebot_writes_spooled", "Writes kept in the on-disk spool (database down)", registry=r
        )
        self.dropped = Counter(
            "stancebot_writes_dropped", "Writes the full spool could not keep (caught up from history)", registry=r
        )
        self.db_errors = Counter("stancebot_database_errors", "Failed database operations", ["operation"], registry=r)
        self.write_size = Histogram(
            "stancebot_write_batch_size",
            "Replies (insert) or stances (save) per database transaction",
            ["operation"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.write_seconds = Histogram(
            "stancebot_write_batch_seconds",
            "Time of one batched database transaction",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "stancebot_classify_batch_size",
            "Replies per model batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "stancebot_classify_batch_seconds", "Time the model took per batch", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.reply_latency = Histogram(
            "stancebot_reply_latency_seconds",
            "From a reply's arrival to its stance committed (live replies)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("stancebot_classify_queue_depth", "Replies waiting for the model", registry=r)
        self.in_flight = Gauge("stancebot_replies_in_flight", "Replies being classified or saved", registry=r)
        self.spool_depth = Gauge("stancebot_spool_writes", "Writes waiting in the on-disk spool", registry=r)
        self.database_up = Gauge("stancebot_database_up", "1 while database writes succeed", registry=r)
        self.gateway_latency = Gauge(
            "stancebot_gateway_latency_seconds", "Discord gateway heartbeat latency (NaN before the first)", registry=r
        )
        self.loop_lag = Histogram(
            "stancebot_event_loop_lag_seconds", "How late the event loop woke a timer", buckets=_LAG_BUCKETS, registry=r
        )
        self.loop_lag_max = Gauge("stancebot_event_loop_lag_max_seconds", "Longest event-loop stall seen", registry=r)
        self.database_up.set(1)
        self._lag_max = 0.0

    def watch(
        self,
        *,
        service: StanceService | None = None,
        pipeline: ReplyPipeline | None = None,
        gateway_latency: Callable[[], float] | None = None,
    ) -> None:
        """Read gauges from live objects at scrape time; count the service's batches."""
        if service is not None:
            self.queue_depth.set_function(lambda: service.queue_depth)
            service.on_batch = self.batch
        if pipeline is not None:
            self.spool_depth.set_function(lambda: pipeline.spooled)
            self.in_flight.set_function(lambda: pipeline.in_flight)
            self.database_up.set_function(lambda: 1.0 if pipeline.database_up else 0.0)
        if gateway_latency is not None:
            self.gateway_latency.set_function(lambda: _finite(gateway_latency()))

    def render(self) -> bytes:
        """The exposition text of every metric."""
        return generate_latest(self.registry)

    # -- the service's batch hook ---------------------------------------------------------------------------------

    def batch(self, size: int, seconds: float) -> None:
        """One model batch: its size and how long it took."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def totals(self) -> dict[str, int]:
        """Replies received, stored, not stored again (duplicates), spooled and dropped since the start."""
        names = {
            "received": "stancebot_replies_received_total",
            "stored": "stancebot_replies_stored_total",
            "duplicates": "stancebot_replies_duplicate_total",
            "spooled": "stancebot_writes_spooled_total",
            "dropped": "stancebot_writes_dropped_total",
        }
        return {key: int(self.registry.get_sample_value(name) or 0) for key, name in names.items()}

    def lag(self, seconds: float) -> None:
        """One event-loop lag sample."""
        self.loop_lag.observe(seconds)
        if seconds > self._lag_max:
            self._lag_max = seconds
            self.loop_lag_max.set(seconds)

    # -- PipelineObserver -----------------------------------------------------------------------------------------

    def reply_received(self) -> None:
        """Count a new reply."""
        self.received.inc()

    def replies_stored(self, count: int) -> None:
        """Count stored replies."""
        self.stored.inc(count)

    def reply_duplicate(self) -> None:
        """Count a reply not stored again."""
        self.duplicates.inc()

    def stance_committed(self, outcome: ReplyOutcome, latency_s: float | None) -> None:
        """Count a committed stance by label; observe its latency."""
        self.classified.labels(outcome.reply.prompt_slug, outcome.result.label).inc()
        if latency_s is not None:
            self.reply_latency.observe(latency_s)

    def database_error(self, operation: str) -> None:
        """Count a failed database operation."""
        self.db_errors.labels(operation).inc()

    def write_batch(self, operation: str, size: int, seconds: float) -> None:
        """Observe one batched database transaction."""
        self.write_size.labels(operation).observe(size)
        self.write_seconds.labels(operation).observe(seconds)

    def writes_spooled(self, count: int) -> None:
        """Count spooled writes."""
        self.spooled.inc(count)

    def writes_dropped(self, count: int) -> None:
        """Count writes the spool could not keep."""
        self.dropped.inc(count)

    def replies_caught_up(self, count: int) -> None:
        """Count replies found in history."""
        self.caught_up.inc(count)


class LoopLagProbe:
    """A task that sleeps ``interval`` seconds over and over; how late it wakes is how long the loop was stalled."""

    def __init__(self, interval: float = 0.05, on_sample: Callable[[float], None] | None = None) -> None:
        self.interval = interval
        self.on_sample = on_sample
        self.max_lag = 0.0
        self.samples = 0
        self._task = BackgroundTask("loop-lag-probe", self._run)

    def start(self) -> None:
        """Start probing (idempotent)."""
        self._task.start()

    def reset(self) -> None:
        """Start a new window for :attr:`max_lag` (e.g. after start-up); the metrics keep the all-time maximum."""
        self.max_lag = 0.0
        self.samples = 0

    async def stop(self) -> None:
        """Stop probing."""
        await self._task.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - started - self.interval)
            self.samples += 1
            self.max_lag = max(self.max_lag, lag)
            if self.on_sample is not None:
                self.on_sample(lag)


def health_report(
    bot: discord.Client, pipeline: ReplyPipeline, probe: LoopLagProbe | None, started: float
) -> dict[str, Any]:
    """What ``/health`` answers: ``ok``, ``degraded`` (database down or spool not yet replayed) or ``starting``."""
    ready = bot.is_ready() and not bot.is_closed()
    if not ready:
        status = "starting" if not bot.is_closed() else "stopped"
    elif not pipeline.database_up or pipeline.spooled:
        status = "degraded"
    else:
        status = "ok"
    latency = bot.latency
    shards = getattr(bot, "shard_ids", None) or ([bot.shard_id] if bot.shard_id is not None else [])
    return {
        "status": status,
        "ready": ready,
        "database": "up" if pipeline.database_up else "down",
        "spooled_writes": pipeline.spooled,
        "queue_depth": pipeline.service.queue_depth,
        "in_flight": pipeline.in_flight,
        "gateway_latency_ms": round(latency * 1000, 1) if math.isfinite(latency) else None,
        "loop_lag_max_ms": round(probe.max_lag * 1000, 1) if probe is not None else None,
        "guilds": len(bot.guilds) if ready else 0,
        "shards": list(shards),
        "uptime_s": round(time.monotonic() - started, 1),
    }


class MetricsServer:
    """``GET /metrics`` (Prometheus text) and ``GET /health`` (JSON; 503 unless ``ok`` or ``degraded``)."""

    def __init__(self, metrics: Metrics, health: HealthFn, *, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._app = app

    async def start(self) -> int:
        """Bind and serve; returns the port (useful with port 0)."""
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        log.info("Metrics on http://%s:%d/metrics, health on /health", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _health(self, request: web.Request) -> web.Response:
        report = self.health()
        status = 200 if report.get("status") in ("ok", "degraded") else 503
        return web.Response(
            body=json.dumps(report).encode(), status=status, headers={"Content-Type": "application/json"}
        )


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and ``exc`` when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as JSON."""
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class Observability:
    """The metrics, the loop-lag probe and (when ``metrics.enabled``) the HTTP server of one bot."""

    def __init__(self, metrics: Metrics, probe: LoopLagProbe, server: MetricsServer | None) -> None:
        self.metrics = metrics
        self.probe = probe
        self.server = server

    async def aclose(self) -> None:
        """Stop the server and the probe."""
        if self.server is not None:
            await self.server.stop()
        await self.probe.stop()


async def start_observability(
    settings: Settings, bot: discord.Client, pipeline: ReplyPipeline, service: StanceService, metrics: Metrics
) -> Observability:
    """Watch the pipeline and the model (``metrics`` is their observer), probe the event loop, and serve
    ``/metrics`` if enabled."""
    started = time.monotonic()
    metrics.watch(service=service, pipeline=pipeline, gateway_latency=lambda: bot.latency)
    probe = LoopLagProbe(on_sample=metrics.lag)
    probe.start()
    server = None
    if settings.metrics.enabled:
        server = MetricsServer(
            metrics,
            lambda: health_report(bot, pipeline, probe, started),
            host=settings.metrics.host,
            port=settings.metrics.port,
        )
        await server.start()
    return Observability(metrics, probe, server)
