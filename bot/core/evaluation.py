"""Evaluate a stance model on labelled replies: quality, calibration and speed, as one JSON-ready dict.

Quality figures are for the model as the bot runs it (:class:`~bot.core.stance.GatedClassifier`: language and
emptiness checks, the ``unclear`` threshold). ECE is for the model's own top-label confidence before the gate.
Speed compares the bot's batched path with a one-message-at-a-time ``transformers`` feature-extraction pipeline on
the same texts: the pipeline of the base encoder (all-MiniLM-L6-v2 as packaged, the naive way to run this model)
and, for a model with its own encoder (fine-tuned, distilled), the pipeline of that same network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bot.core.calibration import gate_blocked
from bot.core.datasets import FOREIGN_TAGS, HARD_TAGS, Example
from bot.core.prompts import UNCLEAR
from bot.core.scoring import macro_f1
from bot.core.stance import GatedClassifier, StanceClassifier
from bot.core.text import normalise_reply

#: Tag subsets reported separately (issue 4: sarcasm, negation, Japanese).
SUBSET_TAGS = ("sarcasm", "negation", "ja", "other-lang")
ECE_BINS = 10


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins: the mean |accuracy - confidence| weighted by bin size."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for i in range(bins):
        lo, hi = edges[i], edges[i + 1]
        mask = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if mask.any():
            total += mask.mean() * abs(hit[mask].mean() - conf[mask].mean())
    return float(total)


def quality(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-label precision/recall/F1 and the confusion matrix (rows gold, columns predicted)."""
    index = {name: i for i, name in enumerate(labels)}
    y = [index[g] for g in gold]
    p = [index[x] for x in pred]
    n = len(labels)
    matrix = np.zeros((n, n), dtype=int)
    for a, b in zip(y, p, strict=True):
        matrix[a, b] += 1
    per_label = {}
    for k, name in enumerate(labels):
        tp = int(matrix[k, k])
        predicted = int(matrix[:, k].sum())
        support = int(matrix[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                           "support": support}  # fmt: skip
    return {
        "accuracy": round(float(np.trace(matrix) / max(1, len(y))), 4),
        "macro_f1": round(macro_f1(y, p, n), 4),
        "per_label": per_label,
        "confusion": {"labels": list(labels), "matrix": matrix.tolist()},
    }


def _subset(examples: Sequence[Example], pred: Sequence[str], keep: Sequence[bool]) -> dict[str, Any]:
    gold = [ex.label for ex, k in zip(examples, keep, strict=True) if k]
    got = [p for p, k in zip(pred, keep, strict=True) if k]
    if not gold:
        return {"n": 0, "accuracy": None}
    return {"n": len(gold), "accuracy": round(sum(g == p for g, p in zip(gold, got, strict=True)) / len(gold), 4)}


def _time_batched(model: StanceClassifier, texts: Sequence[str], window: int, repeats: int) -> float:
    """Replies/s when ``texts`` reach the model ``window`` at a time, in order (the encoder sorts each window by
    length into batches of its own size, as the bot's service does with a backlog)."""
    model.classify(list(texts[:window]))  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), window):
            model.classify(list(texts[i : i + window]))
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def pipeline_speed(model_source: str, texts: Sequence[str], repeats: int = 1) -> float:
    """Replies/s of a ``transformers`` feature-extraction pipeline called once per message (the naive way)."""
    from transformers import pipeline

    pipe = pipeline("feature-extraction", model=model_source, tokenizer=model_source, device="cpu")
    pipe(texts[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for text in texts:
            pipe(text, truncation=True, max_length=256)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def evaluate(
    model: GatedClassifier,
    examples: Sequence[Example],
    labels: Sequence[str],
    *,
    speed: bool = True,
    pipeline_source: str | None = None,
    base_pipeline_source: str | None = None,
    batch_size: int = 32,
    backlog_window: int = 256,
    repeats: int = 2,
) -> dict[str, Any]:
    """Everything ``stancebot evaluate`` prints, for ``model`` on ``examples`` (texts with gold labels).

    ``pipeline_source`` is the encoder folder of the model's own network and ``base_pipeline_source`` that of the
    base encoder, each timed as a per-message pipeline when ``speed`` (the same folder is timed once). Batched speed
    is timed twice: replies in ``backlog_window`` chunks (a backlog, sorted by length) and in ``batch_size`` chunks
    in arrival order (a trickle).
    """
    texts = [ex.text for ex in examples]
    results = model.classify(texts)
    pred = [r.label for r in results]
    out: dict[str, Any] = {"model": model.version, "n": len(examples), "threshold": model.threshold}
    out.update(quality([ex.label for ex in examples], pred, labels))
    out["unclear_share"] = round(sum(p == UNCLEAR for p in pred) / max(1, len(pred)), 4)
    stance = [(ex.label, p) for ex, p in zip(examples, pred, strict=True) if p != UNCLEAR]
    out["stance_precision"] = round(sum(g == p for g, p in stance) / len(stance), 4) if stance else None
    out["gated_share"] = round(
        sum(r.reason is not None and not r.reason.startswith("low confidence") for r in results) / max(1, len(results)),
        4,
    )
    # the model's own answer on the replies the gate lets through, before the threshold: calibration (ECE) and
    # the figures without the threshold
    blocked = gate_blocked(texts, max_chars=model.max_chars)
    seen = [i for i, b in enumerate(blocked) if not b]
    raw = model.inner.classify([normalise_reply(texts[i], max_chars=model.max_chars) for i in seen])
    out["ece"] = round(
        expected_calibration_error(
            [r.confidence for r in raw], [r.label == examples[i].label for r, i in zip(raw, seen, strict=True)]
        ),
        4,
    )
    no_threshold = [UNCLEAR] * len(texts)
    for r, i in zip(raw, seen, strict=True):
        no_threshold[i] = r.label
    q = quality([ex.label for ex in examples], no_threshold, labels)
    out["without_threshold"] = {"accuracy": q["accuracy"], "macro_f1": q["macro_f1"]}
    subsets = {tag: _subset(examples, pred, [tag in ex.tags for ex in examples]) for tag in SUBSET_TAGS}
    subsets["sarcasm_or_negation"] = _subset(examples, pred, [bool(set(ex.tags) & set(HARD_TAGS)) for ex in examples])
    english = [not set(ex.tags) & set(FOREIGN_TAGS) for ex in examples]
    subsets["english"] = _subset(examples, pred, english)
    out["subsets"] = subsets
    eng_q = quality(
        [ex.label for ex, k in zip(examples, english, strict=True) if k],
        [p for p, k in zip(pred, english, strict=True) if k],
        labels,
    )
    out["english_macro_f1"] = eng_q["macro_f1"]
    if speed and texts:
        out["throughput"] = _throughput(
            model, texts, pipeline_source, base_pipeline_source, batch_size, backlog_window, repeats
        )
    return out


def _throughput(
    model: GatedClassifier,
    texts: Sequence[str],
    own: str | None,
    base: str | None,
    batch_size: int,
    window: int,
    repeats: int,
) -> dict[str, Any]:
    window = max(window, batch_size)
    batched = _time_batched(model, texts, window, repeats)
    arrival = _time_batched(model, texts, batch_size, repeats)
    out: dict[str, Any] = {
        "batched_replies_per_s": round(batched, 1),
        "backlog_window": window,
        "batched_arrival_order_replies_per_s": round(arrival, 1),
        "batch_size": batch_size,
    }
    if base:  # the naive way: the packaged encoder's pipeline, one message at a time
        single = pipeline_speed(base, texts)
        out["pipeline_replies_per_s"] = round(single, 1)
        out["ratio"] = round(batched / single, 2)
        out["ratio_arrival_order"] = round(arrival / single, 2)
    if own and own != base:  # the model's own (tuned or smaller) network, per message
        same = pipeline_speed(own, texts)
        out["pipeline_same_network_replies_per_s"] = round(same, 1)
        out["ratio_vs_same_network"] = round(batched / same, 2)
    return out


def evaluate_other_language(
    model: GatedClassifier, examples: Sequence[Example], labels: Sequence[str], *, speed: bool = True
) -> dict[str, Any]:
    """Figures on replies in another language (the Japanese splits): quality as the bot runs it, which path read
    them (``routed``: the share the language detector sent to the multilingual model; the rest read as English)
    and, with ``speed``, replies/s through the gate in one batch (best of two)."""
    texts = [ex.text for ex in examples]
    results = model.classify(texts)
    pred = [r.label for r in results]
    multilingual = model.multilingual
    out: dict[str, Any] = {"model": multilingual.version if multilingual is not None else None, "n": len(examples)}
    out["threshold"] = multilingual.threshold if multilingual is not None else None
    out.update(quality([ex.label for ex in examples], pred, labels))
    out["unclear_share"] = round(sum(p == UNCLEAR for p in pred) / max(1, len(pred)), 4)
    stance = [(ex.label, p) for ex, p in zip(examples, pred, strict=True) if p != UNCLEAR]
    out["stance_precision"] = round(sum(g == p for g, p in stance) / len(stance), 4) if stance else None
    routed = [r.model_version is not None and r.model_version == out["model"] for r in results]
    out["routed"] = round(sum(routed) / max(1, len(routed)), 4)
    out["languages"] = {
        code: sum(r.language == code for r in results) for code in sorted({str(r.language) for r in results})
    }
    if speed and texts:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            model.classify(texts)
            best = min(best, time.perf_counter() - start)
        out["replies_per_s"] = round(len(texts) / best, 1)
    return out
