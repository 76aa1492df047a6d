"""The general stance model: one network that reads a prompt's labels and a reply, for prompts it has never seen.

A bi-encoder with a learned scorer. The encoder reads

* the reply with the prompt's question after it, ``[CLS] reply [SEP] question [SEP]``, pooled over the reply's
  own tokens (so a bare "yes" or "no way" is read against the question it answers);
* each label alone: its name and description, and separately each of its examples (averaged), pooled over the
  whole text.

A small scorer compares the reply's vector with each label's two vectors (element-wise products, the distance,
and the same against the label's offset from the prompt's other labels, plus a scaled cosine) and a softmax over
the prompt's labels gives the stance. The label vectors are computed once per prompt and cached, so a reply costs
one short encoder pass whatever the number of labels; the reply's vector is also what a prompt's learned head
(:mod:`bot.core.adapt`) reads beside the scores once the server has labelled some replies.

One ONNX graph does both: inputs ``input_ids``, ``attention_mask``, ``pool_mask`` and the prompt's label vectors
(``label_descriptions``, ``label_examples``, ``(K, dim)``); outputs ``logits`` ``(B, K)`` and ``embedding``
``(B, dim)``. Label texts go through the same graph (with a dummy label row) and only ``embedding`` is read.

This module builds the inputs (``tokenizers`` only) and runs the graph; training lives in
:mod:`bot.core.general_training` (torch, the ``train`` extra).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.core.prompts import Prompt
from bot.core.stance import StanceResult, best_labels, prompt_fingerprint, softmax

log = logging.getLogger(__name__)

#: Token budgets: the reply, the question read after it, and a label text (description or example).
REPLY_TOKENS = 96
QUESTION_TOKENS = 40
LABEL_TOKENS = 64
#: Prompts whose label vectors :class:`GeneralModel` keeps (least recently used dropped first; a few kB each).
LABEL_CACHE = 256
#: Inputs and outputs of the ONNX graph, in order.
INPUTS = ("input_ids", "attention_mask", "pool_mask", "label_descriptions", "label_examples")
OUTPUTS = ("logits", "embedding")


def label_text(name: str, description: str) -> str:
    """How a label reads to the model: its name in words, then its description."""
    return f"{name.replace('_', ' ')}: {description}"


@dataclass(frozen=True)
class Choices:
    """What the model reads of a prompt: the question, and each label's name, text and examples, in label order."""

    question: str
    labels: tuple[str, ...]
    texts: tuple[str, ...]
    examples: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, prompt: Prompt) -> Choices:
        """The prompt's question and its labels' names, descriptions and examples."""
        return cls(
            prompt.question,
            prompt.label_names,
            tuple(label_text(label.name, label.description) for label in prompt.labels),
            tuple(label.examples for label in prompt.labels),
        )

    def example_sets(self) -> tuple[tuple[str, ...], ...]:
        """Each label's examples; a label without examples stands for itself (its text)."""
        found = self.examples or ((),) * len(self.texts)
        return tuple(examples or (text,) for examples, text in zip(found, self.texts, strict=True))

    def flat_examples(self) -> tuple[list[str], list[int]]:
        """Every label's examples in one list (to encode in one pass), and how many belong to each label."""
        sets = self.example_sets()
        return [text for examples in sets for text in examples], [len(examples) for examples in sets]


class InputBuilder:
    """Turns texts (with an optional context read after them) into the padded arrays the encoder takes.

    Thread-safe: no state per call.
    """

    def __init__(self, tokenizer_file: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        found = {name: self.tokenizer.token_to_id(name) for name in ("[CLS]", "[SEP]", "[PAD]")}
        missing = [name for name, value in found.items() if value is None]
        if missing:
            raise ValueError(f"{tokenizer_file} has no {', '.join(missing)} token")
        ids = {name: int(value) for name, value in found.items() if value is not None}
        self.cls, self.sep, self.pad = ids["[CLS]"], ids["[SEP]"], ids["[PAD]"]

    def pieces(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens or truncation."""
        return [list(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def build(
        self, texts: Sequence[str], context: str = "", *, budget: int = REPLY_TOKENS
    ) -> dict[str, npt.NDArray[Any]]:
        """``[CLS] text [SEP] context [SEP]`` for each text (no context part when ``context`` is empty), cut to
        ``budget`` and :data:`QUESTION_TOKENS`; ``pool_mask`` marks the text's own tokens (an empty text pools its
        ``[SEP]``)."""
        extra = self.pieces([context])[0][:QUESTION_TOKENS] if context else []
        rows = []
        for ids in self.pieces(texts):
            row = [self.cls, *ids[:budget], self.sep]
            span = (1, max(len(row) - 1, 2))
            if extra:
                row += [*extra, self.sep]
            rows.append((row, span))
        n, seq = len(rows), max((len(r) for r, _ in rows), default=0)
        input_ids = np.full((n, seq), self.pad, dtype=np.int64)
        attention = np.zeros((n, seq), dtype=np.int64)
        pool = np.zeros((n, seq), dtype=np.float32)
        for i, (row, (a, b)) in enumerate(rows):
            input_ids[i, : len(row)] = row
            attention[i, : len(row)] = 1
            pool[i, a:b] = 1.0
        return {"input_ids": input_ids, "attention_mask": attention, "pool_mask": pool}


def label_inputs(dim: int, k: int = 1) -> dict[str, npt.NDArray[np.float32]]:
    """Placeholder label vectors, for runs that read only ``embedding`` (encoding label texts)."""
    zeros = np.zeros((k, dim), dtype=np.float32)
    return {"label_descriptions": zeros, "label_examples": zeros}


class GeneralModel:
    """The exported general model on ONNX Runtime: scores any prompt's labels for a batch of replies.

    Like :class:`bot.core.encoder.SentenceEncoder` it opens one single-threaded session per core (``sessions``) and
    spreads length-sorted batches of ``batch_size`` over them. Each prompt's label vectors are computed once.
    """

    def __init__(
        self,
        onnx_file: Path,
        tokenizer_file: Path,
        *,
        version: str,
        temperature: float = 1.0,
        threshold: float = 0.5,
        sessions: int = 0,
        threads: int = 0,
        batch_size: int = 8,
    ) -> None:
        import onnxruntime as ort

        self.version = version
        self.temperature = temperature
        self.threshold = threshold
        self.batch_size = max(1, batch_size)
        self.builder = InputBuilder(tokenizer_file)
        count = sessions or os.cpu_count() or 1
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or (1 if count > 1 else (os.cpu_count() or 1))
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions = [
            ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"]) for _ in range(count)
        ]
        self._pool = ThreadPoolExecutor(max_workers=count - 1) if count > 1 else None
        self._lock = threading.Lock()
        self._labels_lock = threading.Lock()  # the cache's order and evictions (not held while encoding)
        self._labels: OrderedDict[Choices, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = OrderedDict()
        self.dim = int(self._sessions[0].get_outputs()[1].shape[-1])
        self.onnx_file = onnx_file

    def _encode(
        self, texts: Sequence[str], context: str, labels: dict[str, npt.NDArray[np.float32]], budget: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Logits against ``labels`` and vectors of ``texts``, in batches spread over the sessions."""
        n, k = len(texts), labels["label_descriptions"].shape[0]
        logits = np.zeros((n, k), dtype=np.float32)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        chunks = [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]

        def lane(parts: list[list[int]], session: Any) -> None:
            for idx in parts:
                feed = self.builder.build([texts[i] for i in idx], context, budget=budget)
                out_logits, out_vectors = session.run(None, {**feed, **labels})
                logits[idx] = out_logits
                vectors[idx] = out_vectors

        with self._lock:
            lanes = min(len(self._sessions), len(chunks))
            if lanes <= 1 or self._pool is None:
                lane(chunks, self._sessions[0])
            else:
                others = [self._pool.submit(lane, chunks[j::lanes], self._sessions[j]) for j in range(1, lanes)]
                lane(chunks[0::lanes], self._sessions[0])
                for future in others:
                    future.result()
        return logits, vectors

    def label_vectors(self, choices: Choices) -> dict[str, npt.NDArray[np.float32]]:
        """The prompt's label inputs: each label text's vector and its examples' mean vector (cached for the
        :data:`LABEL_CACHE` prompts used last: a prompt edited many times does not grow the cache)."""
        with self._labels_lock:
            found = self._labels.get(choices)
            if found is not None:
                self._labels.move_to_end(choices)
        if found is None:
            placeholder = label_inputs(self.dim)
            _, described = self._encode(choices.texts, "", placeholder, LABEL_TOKENS)
            flat, sizes = choices.flat_examples()
            _, vectors = self._encode(flat, "", placeholder, LABEL_TOKENS)
            bounds = np.cumsum([0, *sizes])
            means = np.stack([vectors[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)])
            means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
            found = (described, means.astype(np.float32))
            with self._labels_lock:
                self._labels[choices] = found
                while len(self._labels) > LABEL_CACHE:
                    self._labels.popitem(last=False)
        return {"label_descriptions": found[0], "label_examples": found[1]}

    def run(self, replies: Sequence[str], choices: Choices) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Raw label scores ``(B, K)`` and reply vectors ``(B, dim)`` of replies to one prompt."""
        if not replies:
            return np.zeros((0, len(choices.labels)), np.float32), np.zeros((0, self.dim), np.float32)
        return self._encode(replies, choices.question, self.label_vectors(choices), REPLY_TOKENS)

    def for_prompt(self, prompt: Prompt) -> GeneralClassifier:
        """A classifier for one prompt (any prompt: the model reads its labels)."""
        return GeneralClassifier(self, prompt)


class GeneralClassifier:
    """The general model applied to one prompt (a :class:`bot.core.stance.StanceClassifier`)."""

    def __init__(self, model: GeneralModel, prompt: Prompt) -> None:
        self.model = model
        self.prompt = prompt
        self.choices = Choices.of(prompt)
        self.labels = prompt.label_names
        self.threshold = model.threshold
        self.temperature = model.temperature
        self.kind = "general"
        self.version = f"general:{model.version}:{prompt_fingerprint(prompt)}"

    def features(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Label scores and reply vectors, for a learned per-prompt head."""
        return self.model.run(texts, self.choices)

    def probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Calibrated label probabilities, shape ``(len(texts), len(labels))``."""
        scores, _ = self.features(texts)
        return softmax(scores.astype(np.float64), self.temperature)

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with its most probable label."""
        if not texts:
            return []
        return best_labels(self.probabilities(texts), self.labels)
