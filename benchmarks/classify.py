"""Throughput of stance classification: the bot's batched path vs a one-message-at-a-time pipeline.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/classify.py [--prompt alliance] [--n 2000] [--model FOLDER]
        [--backend torch|onnx|all] [--quantize no|yes|both] [--window 256] [--layout 0x4 --layout 1x32 ...]

Samples ``--n`` replies with replacement from ``models/data/<prompt>.jsonl`` (fixed seed) and prints one JSON
object: replies/s of the gated classifier fed ``--window`` replies at a time (as the bot's service takes a backlog:
the encoder sorts them by length and runs them in small batches over its ONNX Runtime sessions), for each encoder
backend (torch, ONNX Runtime) in float32 and int8, and of a ``transformers`` feature-extraction pipeline called once
per reply: on the packaged base encoder (the naive way) and, when the model has its own encoder (fine-tuned,
distilled), on that same network. Ratios: ``ratio_<backend>_<precision>`` against the base pipeline,
``ratio_same_network_<backend>_<precision>`` against the same network's. ``--layout SxB`` (repeatable) times the
ONNX encoder with S sessions (0: one per core) and inference batches of B texts; the default is the bot's, 0x4;
``1x32`` is one session on every core, batches of 32 (the layout before December 2026); keys then end in ``_sSbB``.
The variants and the pipelines are timed in interleaved rounds (``--rounds``) over the same texts, so a machine
shared with other jobs slows them alike and the ratios stay comparable.
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
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bot.core import datasets, trained
from bot.core.encoder import BACKENDS, SentenceEncoder
from bot.core.prompts import PromptCatalog
from bot.core.stance import GatedClassifier, SimilarityClassifier, StanceClassifier

#: The checkout (benchmarks run from it).
ROOT = Path(__file__).resolve().parents[1]


def batched_seconds(model: GatedClassifier, texts: list[str], window: int) -> float:
    """Seconds to classify ``texts`` reaching the model ``window`` at a time, in order."""
    start = time.perf_counter()
    for i in range(0, len(texts), window):
        model.classify(texts[i : i + window])
    return time.perf_counter() - start


def pipeline_seconds(pipe: Any, texts: list[str]) -> float:
    """Seconds for a ``transformers`` feature-extraction pipeline called once per text."""
    start = time.perf_counter()
    for text in texts:
        pipe(text, truncation=True, max_length=256)
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", default="alliance")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--window", type=int, default=256, help="replies per classify call (the backlog window)")
    parser.add_argument("--model", default=None, help="model folder (default: models/build/<prompt> if built)")
    parser.add_argument("--pipeline-n", type=int, default=None, help="replies timed through the pipeline (default n)")
    parser.add_argument("--backend", choices=[*BACKENDS, "all"], default="all", help="encoder backend(s) to time")
    parser.add_argument("--quantize", choices=["no", "yes", "both"], default="both", help="fp32, int8 or both")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (load hits all variants)")
    parser.add_argument("--layout", action="append", default=None, help="ONNX sessions x inference batch, e.g. 0x4")
    args = parser.parse_args()
    layouts = [tuple(int(x) for x in layout.split("x")) for layout in args.layout or ["0x4"]]
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    precisions = {"no": (False,), "yes": (True,), "both": (False, True)}[args.quantize]

    prompt = PromptCatalog.from_dir(ROOT / "models" / "prompts").get(args.prompt)
    rows = datasets.load_jsonl(datasets.raw_data_path(prompt.id))
    rng = random.Random(datasets.SEED)
    texts = [rng.choice(rows).text for _ in range(args.n)]
    folder = Path(args.model) if args.model else ROOT / "models" / "build" / prompt.id
    report: dict[str, object] = {
        "prompt": prompt.id,
        "n": len(texts),
        "mean_chars": round(statistics.mean(len(t) for t in texts), 1),
        "window": args.window,
        "cpu_threads": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    models: dict[str, GatedClassifier] = {}
    for backend in backends:
        for quantized in precisions:
            for sessions, batch in layouts if backend == "onnx" else [(0, 32)]:
                encoder = SentenceEncoder(backend=backend, quantize=quantized, sessions=sessions, batch_size=batch)
                inner: StanceClassifier | None = trained.load_if_present(folder, prompt, encoder)
                if inner is None:
                    inner = SimilarityClassifier(prompt, encoder)
                model = GatedClassifier(inner)
                report["model"] = model.version
                key = f"{encoder.backend}_{'int8' if quantized else 'fp32'}"
                if backend == "onnx" and len(layouts) > 1:
                    key += f"_s{sessions}b{batch}"
                models[key] = model
    from transformers import pipeline

    sources = {"base": encoder_source()}
    if (folder / trained.ENCODER_DIR).is_dir():
        sources["same_network"] = str(folder / trained.ENCODER_DIR)
    pipes = {
        name: pipeline("feature-extraction", model=src, tokenizer=src, device="cpu") for name, src in sources.items()
    }
    pipe_texts = texts[: args.pipeline_n or len(texts)]
    for model in models.values():  # warm up
        model.classify(texts[: args.window])
    for pipe in pipes.values():
        pipe(texts[0])
    # interleaved rounds: every variant and the pipeline see the same share of whatever else loads the machine
    seconds = dict.fromkeys(models, 0.0)
    pipe_seconds = dict.fromkeys(pipes, 0.0)
    for r in range(args.rounds):
        chunk = texts[r * len(texts) // args.rounds : (r + 1) * len(texts) // args.rounds]
        for key, model in models.items():
            seconds[key] += batched_seconds(model, chunk, args.window)
        pipe_chunk = pipe_texts[r * len(pipe_texts) // args.rounds : (r + 1) * len(pipe_texts) // args.rounds]
        for name, pipe in pipes.items():
            pipe_seconds[name] += pipeline_seconds(pipe, pipe_chunk)
    for key, secs in seconds.items():
        report[f"batched_{key}_replies_per_s"] = round(len(texts) / secs, 1)
        print(f"batched {key}: {len(texts) / secs:.1f} replies/s", file=sys.stderr)
    keys = {"base": ("pipeline_replies_per_s", "ratio"), "same_network": ("pipeline_same_network_replies_per_s",
            "ratio_same_network")}  # fmt: skip
    for name, secs in pipe_seconds.items():
        single = len(pipe_texts) / secs
        speed_key, prefix = keys[name]
        report[speed_key] = round(single, 1)
        print(f"pipeline ({name}): {single:.1f} replies/s", file=sys.stderr)
        for key, batched in seconds.items():
            report[f"{prefix}_{key}"] = round(len(texts) / batched / single, 2)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


def encoder_source() -> str:
    """The packaged encoder's folder."""
    from bot.core.encoder import packaged_model_path

    return str(packaged_model_path())


if __name__ == "__main__":
    main()
