"""The re-training benchmark: how long the bot's background training of a prompt's head takes, and what it costs
the event loop, with 30, 100 and 300 labelled replies.

    .venv/bin/python benchmarks/retrain.py [--labels 30 100 300] [--json out.json]

In one process, as the bot runs it: the base encoder shipped in the package on ONNX Runtime, a SQLite database,
the stance service and the server learning (:class:`bot.pipeline.learning.ServerLearning`). The prompt is the
alliance seed prompt added by a server under another name (so no trained model serves it: the general model does
when one is shipped, else the similarity model), its replies drawn from the alliance train split, each with a
member's declared stance. For each size a fresh server gets that many labelled replies, then one check runs (label
query, features, 5-fold comparison, final fit, storing the head) while a loop-lag probe wakes every 10 ms and
replies keep being classified at about 20 per second. Printed: the seconds (the check end to end, and the
training in its worker thread), the longest event-loop stall while it ran, the classification latency meanwhile,
peak RSS (VmHWM) and the figures. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import load_settings, make_encoder, model_registry
from bot.core.datasets import load_split
from bot.core.learning import LearningPolicy
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.service import StanceService
from bot.metrics import LoopLagProbe
from bot.pipeline.learning import ServerLearning
from bot.storage.db import make_engine, make_sessionmaker, sqlite_url, upgrade
from bot.storage.records import NewReply
from bot.storage.repository import Repository

T0 = datetime(2026, 11, 1, tzinfo=UTC)
TARGETS = {"seconds": ("<", 60.0), "loop_stall_ms": ("<", 100.0), "peak_rss_mb": ("<", 700.0)}


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def stream_replies(
    service: StanceService, prompt_id: str, guild: int, texts: list[str], stop: asyncio.Event, latencies: list[float]
) -> None:
    """Classify a reply about every 50 ms until ``stop``, recording each one's latency."""
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        await service.classify(prompt_id, texts[i % len(texts)], guild_id=guild)
        latencies.append(time.perf_counter() - started)
        i += 1
        await asyncio.sleep(0.05)


async def bench(sizes: list[int]) -> dict[str, Any]:
    """Run the checks; returns the report."""
    settings = load_settings(None, environ={})
    encoder = make_encoder(settings)
    registry = model_registry(settings, encoder=encoder)
    seed = PromptCatalog.from_dir(settings.prompts_dir()).get("alliance")
    prompt = replace(seed, id="alliance_new")
    examples = [
        ex for ex in load_split(seed, "train") if ex.label != UNCLEAR and not {"ja", "other-lang"} & set(ex.tags)
    ]
    random.Random(13).shuffle(examples)
    folder = Path(tempfile.mkdtemp(prefix="retrain-"))
    engine = make_engine(sqlite_url(folder / "bench.db"))
    await upgrade(engine)
    repo = Repository(make_sessionmaker(engine))
    catalog = PromptCatalog([])
    service = StanceService(catalog, registry.classifier, max_wait_ms=5)
    learning = ServerLearning(repo.learning, service, LearningPolicy(min_labels=min(sizes), step=1))
    rss_start = peak_rss_mb()
    rows = []
    try:
        for n in sizes:
            guild = 9000 + n
            catalog.add(prompt, guild)
            await repo.prompts.add_guild_prompt(prompt, guild, actor_id=1)
            post = await repo.prompts.record_post(
                prompt.id, guild_id=guild, channel_id=guild, message_id=guild + 1, thread_id=guild + 2, posted_by=1
            )
            chosen = examples[:n]
            await repo.writes.add_replies(
                [
                    NewReply(post, guild * 1000 + i, 100 + i, ex.text, T0 + timedelta(minutes=i))
                    for i, ex in enumerate(chosen)
                ]
            )
            for i, ex in enumerate(chosen):
                await repo.writes.declare(post.message_id, author_id=100 + i, label=ex.label)
            base = await service.served(prompt.id, guild)
            await service.classify(prompt.id, "warm up", guild_id=guild)

            probe = LoopLagProbe(interval=0.01)
            probe.start()
            await asyncio.sleep(0.2)
            probe.reset()
            latencies: list[float] = []
            stop = asyncio.Event()
            texts = [ex.text for ex in examples[-200:]]

            stream = asyncio.create_task(stream_replies(service, prompt.id, guild, texts, stop, latencies))
            started = time.perf_counter()
            trained = await learning.check(guild, prompt.id)
            seconds = time.perf_counter() - started
            stop.set()
            await stream
            await probe.stop()
            assert trained is not None
            f = trained.outcome.figures
            rows.append(
                {
                    "labels": n,
                    "base": base.version,
                    "seconds": round(seconds, 2),
                    "training_thread_s": trained.outcome.seconds,
                    "loop_stall_ms": round(probe.max_lag * 1000, 1),
                    "probe_samples": probe.samples,
                    "replies_classified_meanwhile": len(latencies),
                    "reply_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
                    "reply_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
                    "peak_rss_mb": round(peak_rss_mb(), 1),
                    "base_macro_f1": f["base_macro_f1"],
                    "head_macro_f1": f["head_macro_f1"],
                    "switched": trained.outcome.switch,
                }
            )
    finally:
        await learning.close()
        await service.close()
        await engine.dispose()
    return {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rss_before_mb": round(rss_start, 1),
        "runs": rows,
    }


def main() -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[30, 100, 300])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = asyncio.run(bench(sorted(args.labels)))
    print(f"cores {report['cores']}, load average {' '.join(f'{x:.2f}' for x in report['load_average'])}")
    print(f"peak RSS before the first training: {report['rss_before_mb']} MB")
    for row in report["runs"]:
        verdict = {k: row[k] < limit for k, (_op, limit) in TARGETS.items()}
        print(
            f"{row['labels']:>4} labels: {row['seconds']:6.2f} s (training thread {row['training_thread_s']:.2f} s), "
            f"longest loop stall {row['loop_stall_ms']} ms over {row['probe_samples']} samples, "
            f"{row['replies_classified_meanwhile']} replies classified meanwhile (p50 {row['reply_p50_ms']} ms, "
            f"max {row['reply_max_ms']} ms), peak RSS {row['peak_rss_mb']} MB; "
            f"macro-F1 head {row['head_macro_f1']:.3f} vs base {row['base_macro_f1']:.3f} "
            f"({'switched' if row['switched'] else 'kept'}); targets met: "
            f"{all(verdict.values())} {verdict}"
        )
    print(f"base: {report['runs'][0]['base']}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
