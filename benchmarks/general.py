"""Throughput of the general model as the bot runs it vs a one-message-at-a-time ``transformers`` pipeline.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/general.py [--n 2000] [--window 256] [--rounds 10]

Samples ``--n`` replies with replacement from the general model's held-out prompts (``models/data/general``, fixed
seed) and prints one JSON object: replies/s of the shipped general model behind the bot's gate, fed ``--window``
replies of one prompt at a time (the model reads each reply with its prompt's question, against the prompt's
cached label vectors), and of a ``transformers`` feature-extraction pipeline on the packaged encoder called once
per reply (the naive way); ``ratio`` is the first over the second. Both are timed in interleaved rounds over the
same texts, so a machine shared with other jobs slows them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bot.config import Settings, model_registry
from bot.core.general_training import load_general
from bot.core.stance import GatedClassifier


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--window", type=int, default=256, help="replies per classify call (the backlog window)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    args = parser.parse_args()

    registry = model_registry(Settings())
    general = registry.general_model()
    if general is None:
        sys.exit("No general model is shipped: run `stancebot train --general` first.")
    rng = random.Random(13)
    held_out = [pd for pd in load_general() if pd.role == "test"]
    work = []
    for _ in range(args.n):
        pd = rng.choice(held_out)
        work.append((pd.prompt.id, rng.choice(pd.examples).text))
    models = {pd.prompt.id: GatedClassifier(general.for_prompt(pd.prompt)) for pd in held_out}
    texts = [text for _, text in work]

    from transformers import pipeline

    from bot.core.encoder import packaged_model_path

    source = str(packaged_model_path())
    pipe = pipeline("feature-extraction", model=source, tokenizer=source, device="cpu")
    for model in models.values():  # warm up: label vectors cached, sessions opened
        model.classify(texts[:8])
    pipe(texts[0])

    def batched(part: list[tuple[str, str]]) -> float:
        start = time.perf_counter()
        for i in range(0, len(part), args.window):
            window = part[i : i + args.window]
            by_prompt: dict[str, list[str]] = {}
            for prompt_id, text in window:
                by_prompt.setdefault(prompt_id, []).append(text)
            for prompt_id, replies in by_prompt.items():
                models[prompt_id].classify(replies)
        return time.perf_counter() - start

    def single(part: list[str]) -> float:
        start = time.perf_counter()
        for text in part:
            pipe(text, truncation=True, max_length=256)
        return time.perf_counter() - start

    seconds = {"general": 0.0, "pipeline": 0.0}
    load_before = [round(x, 2) for x in os.getloadavg()]
    for r in range(args.rounds):
        lo, hi = r * len(work) // args.rounds, (r + 1) * len(work) // args.rounds
        seconds["general"] += batched(work[lo:hi])
        seconds["pipeline"] += single(texts[lo:hi])
    report = {
        "model": general.version,
        "n": len(texts),
        "prompts": len(models),
        "mean_chars": round(statistics.mean(len(t) for t in texts), 1),
        "window": args.window,
        "cpu_threads": os.cpu_count(),
        "general_replies_per_s": round(len(texts) / seconds["general"], 1),
        "pipeline_replies_per_s": round(len(texts) / seconds["pipeline"], 1),
        "ratio": round(seconds["pipeline"] / seconds["general"], 2),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
