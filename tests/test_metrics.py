"""Metrics, the loop-lag probe, /metrics and /health, JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from types import SimpleNamespace
from typing import Any

import aiohttp

from bot.core.stance import StanceResult
from bot.metrics import JsonLogFormatter, LoopLagProbe, Metrics, MetricsServer, health_report
from bot.pipeline import ReplyOutcome
from bot.storage.records import ReplyRef


def _value(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_the_observer_counts_what_the_pipeline_reports() -> None:
    metrics = Metrics()
    ref = ReplyRef(id=1, message_id=2, prompt_slug="alliance", guild_id=3, author_id=4, content="x")
    for _ in range(3):
        metrics.reply_received()
    metrics.replies_stored(3)
    metrics.reply_duplicate()
    metrics.stance_committed(ReplyOutcome(ref, StanceResult("fair", 0.9), "v"), 0.12)
    metrics.stance_committed(ReplyOutcome(ref, StanceResult("fair", 0.8), "v"), None)
    metrics.database_error("insert")
    metrics.writes_spooled(5)
    metrics.batch(16, 0.2)
    metrics.lag(0.03)
    metrics.lag(0.01)
    assert _value(metrics, "stancebot_replies_received_total") == 3
    assert _value(metrics, "stancebot_replies_stored_total") == 3
    assert _value(metrics, "stancebot_replies_classified_total", {"prompt": "alliance", "label": "fair"}) == 2
    assert _value(metrics, "stancebot_reply_latency_seconds_count") == 1
    assert _value(metrics, "stancebot_database_errors_total", {"operation": "insert"}) == 1
    assert _value(metrics, "stancebot_writes_spooled_total") == 5
    assert _value(metrics, "stancebot_classify_batch_size_sum") == 16
    assert _value(metrics, "stancebot_event_loop_lag_max_seconds") == 0.03
    text = metrics.render().decode()
    assert "stancebot_classify_batch_seconds_bucket" in text


def test_gauges_read_live_objects() -> None:
    metrics = Metrics()
    service = SimpleNamespace(queue_depth=7, on_batch=None)
    pipeline = SimpleNamespace(spooled=3, in_flight=2, database_up=False)
    metrics.watch(service=service, pipeline=pipeline, gateway_latency=lambda: math.inf)  # type: ignore[arg-type]
    assert _value(metrics, "stancebot_classify_queue_depth") == 7
    assert _value(metrics, "stancebot_spool_writes") == 3
    assert _value(metrics, "stancebot_database_up") == 0
    assert math.isnan(_value(metrics, "stancebot_gateway_latency_seconds"))  # no heartbeat yet
    assert service.on_batch == metrics.batch


async def test_the_probe_sees_a_stalled_loop() -> None:
    samples: list[float] = []
    probe = LoopLagProbe(interval=0.01, on_sample=samples.append)
    probe.start()
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # noqa: ASYNC251 - the stall being measured
    await asyncio.sleep(0.05)
    await probe.stop()
    assert probe.max_lag >= 0.12
    assert max(samples) == probe.max_lag


def _bot(ready: bool) -> Any:
    return SimpleNamespace(
        is_ready=lambda: ready, is_closed=lambda: False, latency=0.0421, guilds=[1, 2], shard_ids=[0, 1], shard_id=None
    )


def _pipeline(up: bool = True, spooled: int = 0) -> Any:
    return SimpleNamespace(database_up=up, spooled=spooled, in_flight=0, service=SimpleNamespace(queue_depth=0))


def test_health_says_ok_degraded_or_starting() -> None:
    report = health_report(_bot(True), _pipeline(), None, time.monotonic() - 5)
    assert report["status"] == "ok" and report["gateway_latency_ms"] == 42.1 and report["shards"] == [0, 1]
    assert health_report(_bot(True), _pipeline(up=False), None, 0)["status"] == "degraded"
    assert health_report(_bot(True), _pipeline(spooled=3), None, 0)["status"] == "degraded"
    assert health_report(_bot(False), _pipeline(), None, 0)["status"] == "starting"


async def test_the_server_serves_metrics_and_health() -> None:
    metrics = Metrics()
    metrics.reply_received()
    state = {"status": "starting"}
    server = MetricsServer(metrics, lambda: dict(state), port=0)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                assert answer.status == 200
                assert answer.headers["Content-Type"].startswith("text/plain")
                assert "stancebot_replies_received_total 1.0" in await answer.text()
            async with http.get(f"http://127.0.0.1:{port}/health") as answer:
                assert answer.status == 503
                assert await answer.json() == {"status": "starting"}
            state["status"] = "degraded"
            async with http.get(f"http://127.0.0.1:{port}/health") as answer:
                assert answer.status == 200
    finally:
        await server.stop()


def test_json_logs_are_one_object_per_line() -> None:
    record = logging.LogRecord("bot.pipeline", logging.WARNING, __file__, 1, "Spooled %d writes", (3,), None)
    data = json.loads(JsonLogFormatter().format(record))
    assert data["level"] == "WARNING" and data["logger"] == "bot.pipeline" and data["message"] == "Spooled 3 writes"
    assert data["time"].endswith("+00:00")
