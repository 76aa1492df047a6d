"""Throughput of stance classification: the bot's batched path vs a one-message-at-a-time pipeline.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/classify.py [--prompt alliance] [--n 2000] [--model FOLDER]
        [--backend torch|onnx|all] [--quantize no|yes|both]

Samples ``--n`` replies with replacement from ``models/data/<prompt>.jsonl`` (fixed seed) and prints one JSON
object: replies/s of the gated classifier fed in batches of 32 (as the bot's service does), for each encoder
backend (torch, ONNX Runtime) in float32 and int8, and of a ``transformers`` feature-extraction pipeline called once
per reply, with the ratios (``ratio_<backend>_<precision>``) and the load average before and after (the machine may
be shared: ratios are only comparable at similar load).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bot import PROJECT_ROOT
from bot.core import datasets, trained
from bot.core.encoder import BACKENDS, SentenceEncoder
from bot.core.evaluation import pipeline_speed
from bot.core.prompts import PromptCatalog
from bot.core.stance import GatedClassifier, SimilarityClassifier, StanceClassifier


def batched_speed(model: GatedClassifier, texts: list[str], batch_size: int) -> float:
    """Replies/s when ``texts`` arrive in batches of ``batch_size``, in order."""
    model.classify(texts[:batch_size])
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        model.classify(texts[i : i + batch_size])
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="alliance")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default=None, help="model folder (default: models/build/<prompt> if built)")
    parser.add_argument("--pipeline-n", type=int, default=None, help="replies timed through the pipeline (default n)")
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all", help="encoder backend(s) to time")
    parser.add_argument("--quantize", choices=["no", "yes", "both"], default="both", help="fp32, int8 or both")
    args = parser.parse_args()
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    precisions = {"no": (False,), "yes": (True,), "both": (False, True)}[args.quantize]

    prompt = PromptCatalog.from_dir(PROJECT_ROOT / "models" / "prompts").get(args.prompt)
    rows = datasets.load_jsonl(datasets.raw_data_path(prompt.id))
    rng = random.Random(datasets.SEED)
    texts = [rng.choice(rows).text for _ in range(args.n)]
    folder = Path(args.model) if args.model else PROJECT_ROOT / "models" / "build" / prompt.id
    report: dict[str, object] = {
        "prompt": prompt.id,
        "n": len(texts),
        "mean_chars": round(statistics.mean(len(t) for t in texts), 1),
        "cpu_threads": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    speeds: dict[str, float] = {}
    for backend in backends:
        for quantized in precisions:
            encoder = SentenceEncoder(backend=backend, quantize=quantized)
            inner: StanceClassifier | None = trained.load_if_present(folder, prompt, encoder)
            if inner is None:
                inner = SimilarityClassifier(prompt, encoder)
            model = GatedClassifier(inner)
            report["model"] = model.version
            key = f"{encoder.backend}_{'int8' if quantized else 'fp32'}"
            speeds[key] = batched_speed(model, texts, args.batch_size)
            report[f"batched_{key}_replies_per_s"] = round(speeds[key], 1)
            print(f"batched {key}: {speeds[key]:.1f} replies/s", file=sys.stderr)
            del model, inner, encoder
    source = str(folder / trained.ENCODER_DIR) if (folder / trained.ENCODER_DIR).is_dir() else encoder_source()
    sample = texts[: args.pipeline_n or len(texts)]
    single = pipeline_speed(source, sample)
    report["pipeline_replies_per_s"] = round(single, 1)
    print(f"pipeline: {single:.1f} replies/s", file=sys.stderr)
    for key, speed in speeds.items():
        report[f"ratio_{key}"] = round(speed / single, 2)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


def encoder_source() -> str:
    """The packaged encoder's folder."""
    from bot.core.encoder import packaged_model_path

    return str(packaged_model_path())


if __name__ == "__main__":
    main()
