"""The general stance model: one network that reads a prompt's labels and a reply, for prompts it has never seen.

A multiple-choice cross-encoder. One input holds the reply, the prompt's question and every label's name and
description, each in its own segment::

    [CLS] reply [SEP] question [SEP] label 1: description [SEP] label 2: description [SEP] ...

The encoder reads them together (so the reply is read against every option at once); each label's score comes
from the mean of its segment's hidden states beside the ``[CLS]`` state, and a softmax over the prompt's labels
gives the stance. It also returns the reply's own mean-pooled vector, which a prompt's learned head
(:mod:`bot.core.adapt`) uses beside the scores once the server has labelled some replies.

This module builds the inputs (``tokenizers`` only) and runs the exported ONNX graph; training lives in
:mod:`bot.core.general_training` (torch, the ``train`` extra).
"""

from __future__ import annotations

import logging
import os
import threading
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

#: Token budget of each part of the input (the reply is cut first, then the question, then each description).
REPLY_TOKENS = 96
QUESTION_TOKENS = 40
LABEL_TOKENS = 40
#: Inputs of the ONNX graph, in order.
INPUTS = ("input_ids", "attention_mask", "label_mask", "reply_mask")


def label_text(name: str, description: str) -> str:
    """How a label reads inside the input: its name in words, then its description."""
    return f"{name.replace('_', ' ')}: {description}"


@dataclass(frozen=True)
class Choices:
    """What the model reads of a prompt: the question and each label's text, in the prompt's label order."""

    question: str
    labels: tuple[str, ...]
    texts: tuple[str, ...]

    @classmethod
    def of(cls, prompt: Prompt) -> Choices:
        """The prompt's question and its labels' names and descriptions."""
        return cls(
            prompt.question,
            prompt.label_names,
            tuple(label_text(label.name, label.description) for label in prompt.labels),
        )


class InputBuilder:
    """Turns (reply, choices) pairs into the padded arrays the network takes. Thread-safe (no state per call)."""

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
        self._cache: dict[Choices, tuple[list[int], list[list[int]]]] = {}
        self._lock = threading.Lock()

    def _pieces(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def _choices(self, choices: Choices) -> tuple[list[int], list[list[int]]]:
        with self._lock:
            cached = self._cache.get(choices)
        if cached is None:
            question, *labels = self._pieces([choices.question, *choices.texts])
            cached = (question[:QUESTION_TOKENS], [ids[:LABEL_TOKENS] for ids in labels])
            with self._lock:
                self._cache[choices] = cached
        return cached

    def build(
        self, replies: Sequence[str], choices: Sequence[Choices]
    ) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.bool_]]:
        """The graph's inputs for each reply with its choices, and which label slots are real (``(B, K)``).

        Rows may come from prompts with different numbers of labels: the label axis is padded to the largest and
        the padding slots are marked ``False``.
        """
        rows: list[tuple[list[int], list[tuple[int, int]], tuple[int, int]]] = []
        for reply_ids, choice in zip(self._pieces(replies), choices, strict=True):
            question, labels = self._choices(choice)
            ids = [self.cls, *reply_ids[:REPLY_TOKENS], self.sep]
            reply_span = (1, len(ids) - 1)
            ids += [*question, self.sep]
            spans = []
            for label in labels:
                spans.append((len(ids), len(ids) + len(label)))
                ids += [*label, self.sep]
            rows.append((ids, spans, reply_span))
        seq = max(len(r[0]) for r in rows)
        k = max(len(r[1]) for r in rows)
        n = len(rows)
        input_ids = np.full((n, seq), self.pad, dtype=np.int64)
        attention = np.zeros((n, seq), dtype=np.int64)
        label_mask = np.zeros((n, k, seq), dtype=np.float32)
        reply_mask = np.zeros((n, seq), dtype=np.float32)
        valid = np.zeros((n, k), dtype=bool)
        for i, (ids, spans, (r0, r1)) in enumerate(rows):
            input_ids[i, : len(ids)] = ids
            attention[i, : len(ids)] = 1
            reply_mask[i, r0 : max(r1, r0 + 1)] = 1.0  # an empty reply still pools something: its [SEP]
            for j, (a, b) in enumerate(spans):
                label_mask[i, j, a : max(b, a + 1)] = 1.0
                valid[i, j] = True
        feed: dict[str, npt.NDArray[Any]] = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "label_mask": label_mask,
            "reply_mask": reply_mask,
        }
        return feed, valid


class GeneralModel:
    """The exported general model on ONNX Runtime: scores any prompt's labels for a batch of replies.

    Like :class:`bot.core.encoder.SentenceEncoder` it opens one single-threaded session per core (``sessions``) and
    spreads length-sorted batches of ``batch_size`` over them.
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
        self.dim = int(self._sessions[0].get_outputs()[1].shape[-1])
        self.onnx_file = onnx_file

    def run(
        self, replies: Sequence[str], choices: Sequence[Choices]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Raw label scores ``(B, K)`` (padding slots ``-inf``) and reply vectors ``(B, dim)`` for each reply."""
        n = len(replies)
        k = max((len(c.labels) for c in choices), default=0)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        if not n:
            return scores, vectors
        order = sorted(range(n), key=lambda i: len(replies[i]) + sum(map(len, choices[i].texts)))
        chunks = [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]

        def lane(parts: list[list[int]], session: Any) -> None:
            for idx in parts:
                feed, valid = self.builder.build([replies[i] for i in idx], [choices[i] for i in idx])
                logits, vecs = session.run(None, feed)
                width = valid.shape[1]
                scores[idx, :width] = np.where(valid, logits, -np.inf)
                vectors[idx] = vecs

        with self._lock:
            lanes = min(len(self._sessions), len(chunks))
            if lanes <= 1 or self._pool is None:
                lane(chunks, self._sessions[0])
            else:
                others = [self._pool.submit(lane, chunks[j::lanes], self._sessions[j]) for j in range(1, lanes)]
                lane(chunks[0::lanes], self._sessions[0])
                for future in others:
                    future.result()
        return scores, vectors

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
        return self.model.run(texts, [self.choices] * len(texts))

    def probabilities(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Calibrated label probabilities, shape ``(len(texts), len(labels))``."""
        scores, _ = self.features(texts)
        return softmax(scores.astype(np.float64), self.temperature)

    def classify(self, texts: Sequence[str]) -> list[StanceResult]:
        """Label each text with its most probable label."""
        if not texts:
            return []
        return best_labels(self.probabilities(texts), self.labels)
