"""Export a sentence encoder to ONNX once, cached on disk: fp32 and int8 (dynamic quantization).

The exported graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes) and returns
``embedding``: the mean-pooled, L2-normalised sentence vectors, exactly what
:meth:`bot.core.encoder.SentenceEncoder.encode` computes with torch. The cache folder is named by a hash of the
model's config and weights (and of this exporter's version), so a retrained ``encoder/`` gets a new export and an
unchanged one is reused. Nothing is downloaded: export needs only torch, ``onnx`` and ``onnxruntime``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from bot.core.files import write_json_atomic

log = logging.getLogger(__name__)

#: Bumped when the exported graph or its quantization changes; older cache folders are then ignored.
EXPORT_VERSION = "2"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8-{weights}.onnx"
INFO_FILE = "export.json"
OPSET = 17
#: Files whose content decides the export (weights in either format, and the architecture).
_KEY_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")


class ExportError(RuntimeError):
    """The encoder could not be exported or quantized."""


def cache_key(source: Path) -> str:
    """A short hash of the model folder's config and weights plus the exporter version."""
    digest = hashlib.sha256(f"stancebot-onnx:{EXPORT_VERSION}:opset{OPSET}".encode())
    found = False
    for name in _KEY_FILES:
        path = source / name
        if path.is_file():
            found = True
            digest.update(name.encode())
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    if not found:
        raise ExportError(f"{source} has no config.json or weights to export")
    return digest.hexdigest()[:16]


def _export_fp32(source: Path, target: Path) -> None:
    """Trace the encoder plus mean pooling and normalisation into ``target`` with the TorchScript exporter."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)

    class Pooled(torch.nn.Module):
        """Keyword inputs (BertModel's positional order breaks the exporter), pooled unit-length output."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    texts = ["a short reply", "a somewhat longer reply, to trace the padding"]
    sample = tokenizer(texts, padding=True, return_tensors="pt")
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
        torch.onnx.export(
            Pooled(model),
            (),
            str(target),
            kwargs={"input_ids": sample["input_ids"], "attention_mask": sample["attention_mask"]},
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": {v: k for k, v in axes.items()},
                "attention_mask": {v: k for k, v in axes.items()},
                "embedding": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI dot-product instructions (AVX512-VNNI or AVX-VNNI); /proc/cpuinfo is read once."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def int8_weight_type() -> str:
    """``"s8"`` (signed weights, the fast u8·s8 VNNI kernels) on CPUs with VNNI, else ``"u8"``.

    Without VNNI, u8·s8 runs through AVX2's ``vpmaddubsw``, which can saturate; u8·u8 avoids that but gets no speed-up
    over fp32. With VNNI, signed weights run about 2x as fast as fp32 on our replies (``benchmarks/classify.py``).
    """
    return "s8" if cpu_has_vnni() else "u8"


def _quantize_int8(fp32: Path, target: Path, weights: str, ops: tuple[str, ...] = ("MatMul",)) -> None:
    """Dynamic 8-bit quantization of the weights of ``ops``, per output channel (by default the MatMuls only: word
    embeddings stay fp32).

    Per-channel scales keep the embeddings close to fp32 (mean cosine to fp32 ~0.99 on our replies, against ~0.96
    per tensor). ``weights`` is ``"s8"`` or ``"u8"`` (see :func:`int8_weight_type`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    was = root.disabled
    root.disabled = True  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(
            str(fp32),
            str(target),
            weight_type=QuantType.QInt8 if weights == "s8" else QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=list(ops),
        )
    finally:
        root.disabled = was


def ensure_exported(source: Path, cache_root: Path, *, quantized: bool) -> Path:
    """The ONNX file for the encoder in ``source`` (fp32 or int8), exported into ``cache_root/<hash>/`` if absent.

    Files are written to a temporary folder and moved into place, so a concurrent or interrupted export never
    leaves a half-written model. Raises :class:`ExportError` when export fails.
    """
    folder = cache_root / cache_key(source)
    weights = int8_weight_type() if quantized else ""
    wanted = folder / (INT8_FILE.format(weights=weights) if quantized else FP32_FILE)
    if wanted.is_file():
        return wanted
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder))
    try:
        fp32 = folder / FP32_FILE
        if not fp32.is_file():
            log.info("Exporting encoder %s to ONNX (once) in %s", source, folder)
            _export_fp32(source, tmp / FP32_FILE)
            os.replace(tmp / FP32_FILE, fp32)
        if quantized and not wanted.is_file():
            log.info("Quantizing the ONNX encoder to int8 in %s", folder)
            _quantize_int8(fp32, tmp / wanted.name, weights)
            os.replace(tmp / wanted.name, wanted)
        info = {"source": str(source), "export_version": EXPORT_VERSION, "opset": OPSET}
        write_json_atomic(folder / INFO_FILE, info)
    except Exception as exc:
        raise ExportError(f"ONNX export of {source} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wanted


#: How shipped models are quantized: signed int8 weights per output channel for the MatMuls (the fast u8·s8 VNNI
#: kernels) and for the word-embedding table (``Gather``: a quarter of its fp32 size, mean cosine to fp32 0.991).
SHIPPED_QUANTIZATION = "dynamic int8: s8 per-channel weights for MatMul and Gather (word embeddings), fp32 head"


def _quantize_for_shipping(fp32: Path, target: Path) -> None:
    """Quantize an exported encoder as shipped models are (see :data:`SHIPPED_QUANTIZATION`)."""
    _quantize_int8(fp32, target, "s8", ("MatMul", "Gather"))


def _add_head(model_file: Path, weights: Any, bias: Any, target: Path) -> None:
    """Append the stance head to an encoder graph: ``logits = embedding @ weights.T + bias`` as a second output."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_file))
    graph = model.graph
    w = numpy_helper.from_array(np.ascontiguousarray(np.asarray(weights, dtype=np.float32).T), "stance_head.weight_t")
    b = numpy_helper.from_array(np.asarray(bias, dtype=np.float32), "stance_head.bias")
    graph.initializer.extend([w, b])
    graph.node.extend(
        [
            helper.make_node("MatMul", ["embedding", w.name], ["stance_head.scores"], name="stance_head.matmul"),
            helper.make_node("Add", ["stance_head.scores", b.name], ["logits"], name="stance_head.add"),
        ]
    )
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(bias)]))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def _tokenizer_rules(path: Path) -> dict[str, Any]:
    """A ``tokenizer.json`` without its padding and truncation settings (the bot sets those itself): two files
    with the same rules split every text into the same ids."""
    rules = json.loads(path.read_text(encoding="utf-8"))
    return {key: value for key, value in rules.items() if key not in ("padding", "truncation")}


def export_bot_model(
    encoder_dir: Path,
    ship_root: Path,
    name: str,
    config: dict[str, Any],
    *,
    head: tuple[Any, Any] | None = None,
) -> Path:
    """Write one bot-ready model into ``ship_root/name/`` (see :mod:`bot.core.shipped`): ``model.onnx`` (the int8
    encoder, plus the stance head when given) and ``config.json``; copy the tokenizer into ``ship_root/tokenizer``
    the first time. Raises :class:`ExportError` when the export fails or the tokenizer differs from the shared one.
    Returns the model folder. The manifest is written by the caller (:func:`bot.core.shipped.write_manifest`).
    """
    from bot.core.shipped import CONFIG, TOKENIZER_DIR, TOKENIZER_FILES, WEIGHTS

    shared = ship_root / TOKENIZER_DIR
    mine, theirs = encoder_dir / "tokenizer.json", shared / "tokenizer.json"
    if theirs.is_file() and _tokenizer_rules(mine) != _tokenizer_rules(theirs):
        raise ExportError(f"{mine} differs from the shared {theirs}; models in one folder share a tokenizer")
    folder = ship_root / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ship-", dir=ship_root))
    try:
        _export_fp32(encoder_dir, tmp / "fp32.onnx")
        _quantize_for_shipping(tmp / "fp32.onnx", tmp / "int8.onnx")
        if head is not None:
            _add_head(tmp / "int8.onnx", head[0], head[1], tmp / WEIGHTS)
        else:
            (tmp / "int8.onnx").rename(tmp / WEIGHTS)
        shared.mkdir(exist_ok=True)
        for file in TOKENIZER_FILES:
            if not (shared / file).is_file():
                shutil.copyfile(encoder_dir / file, shared / file)
        os.replace(tmp / WEIGHTS, folder / WEIGHTS)
        info = {**config, "opset": OPSET, "quantization": SHIPPED_QUANTIZATION}
        info["outputs"] = ["embedding", "logits"] if head is not None else ["embedding"]
        write_json_atomic(folder / CONFIG, info)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"Export of {encoder_dir} to {folder} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
