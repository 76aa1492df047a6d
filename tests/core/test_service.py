"""The stance service's batching: micro-batches when replies trickle in, a wider window under a backlog."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.core.prompts import PromptCatalog
from bot.core.service import StanceService
from bot.core.stance import StanceResult


class Recording:
    """A stand-in model that labels a text by its number and records every batch it was given."""

    version = "recording:1"
    threshold = 0.0

    def __init__(self) -> None:
        self.batches: list[int] = []

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        self.batches.append(len(texts))
        return [StanceResult("unfair" if int(t.split()[1]) % 2 else "fair", 0.9) for t in texts]


async def test_a_backlog_is_taken_in_one_wide_batch(catalog: PromptCatalog) -> None:
    model = Recording()
    service = StanceService(catalog, lambda _p: model, batch_size=8, max_wait_ms=1, backlog_window=64)
    try:
        # 100 replies queued before the batcher runs: a backlog
        futures = [await service.submit("alliance", f"reply {i}", wait=False) for i in range(100)]
        results = await asyncio.gather(*[f for f in futures if f is not None])
    finally:
        await service.close()
    assert len(results) == 100
    # each reply got its own answer, in order, however the batches were cut
    assert [r.label for r in results] == ["unfair" if i % 2 else "fair" for i in range(100)]
    assert sum(model.batches) == 100
    assert max(model.batches) == 64  # wider than batch_size while the backlog lasted
    assert service.stats.max_batch_size == 64


async def test_without_a_backlog_batches_stay_at_batch_size(catalog: PromptCatalog) -> None:
    model = Recording()
    service = StanceService(catalog, lambda _p: model, batch_size=8, max_wait_ms=20, backlog_window=64)
    try:
        for start in range(0, 40, 5):  # 5 at a time, each group finished before the next arrives
            futures = [await service.submit("alliance", f"reply {i}", wait=False) for i in range(start, start + 5)]
            await asyncio.gather(*[f for f in futures if f is not None])
    finally:
        await service.close()
    assert sum(model.batches) == 40
    assert max(model.batches) <= 8
