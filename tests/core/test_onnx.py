"""The ONNX Runtime backend of the encoder: same vectors as torch, a reused on-disk export, a torch fallback."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.core import datasets, onnx_export
from bot.core.encoder import SentenceEncoder
from bot.core.prompts import UNCLEAR, PromptCatalog
from bot.core.registry import ModelRegistry
from bot.core.service import StanceService

TEXTS = [
    "Japan pays its fair share, the bases are there for US interests too",
    "unfair? no way",
    "It's unfair: American taxpayers carry the alliance while Japan spends barely 1% of GDP on defense.",
    "ok",
    "Both sides gain: the US gets forward bases, Japan gets deterrence. Mutual benefit, plain and simple 🤝",
    "在日米軍の費用、日本が全額払うくらいでいいんじゃない？",
]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export (fp32 and int8) shared by this module's tests."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_fp32(onnx_cache: Path) -> SentenceEncoder:
    return SentenceEncoder(backend="onnx", cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def onnx_int8(onnx_cache: Path) -> SentenceEncoder:
    return SentenceEncoder(backend="onnx", quantize=True, cache_dir=onnx_cache)


def test_fp32_matches_torch(encoder: SentenceEncoder, onnx_fp32: SentenceEncoder) -> None:
    assert onnx_fp32.backend == "onnx" and not onnx_fp32.quantized and onnx_fp32.dim == encoder.dim
    ref, got = encoder.encode(TEXTS), onnx_fp32.encode(TEXTS)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (got * ref).sum(axis=1).min() > 1 - 1e-3
    assert np.abs(got - ref).max() < 1e-3
    # batching and length sorting do not change a text's vector
    np.testing.assert_allclose(onnx_fp32.encode(TEXTS[:1]), got[:1], atol=1e-5)
    np.testing.assert_allclose(onnx_fp32.encode(TEXTS, batch_size=2), got, atol=1e-5)
    assert onnx_fp32.encode([]).shape == (0, encoder.dim)


class _CountingSession:
    """A real ONNX Runtime session that counts its runs and the threads they ran on."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.runs, self.threads = inner, 0, set[str]()

    def run(self, *args: Any) -> Any:
        self.runs += 1
        self.threads.add(threading.current_thread().name)
        return self.inner.run(*args)

    def get_outputs(self) -> Any:
        return self.inner.get_outputs()


def test_parallel_sessions_give_the_same_vectors(onnx_cache: Path, onnx_fp32: SentenceEncoder) -> None:
    """Two single-threaded sessions share one call's batches (both run, on two threads); vectors and their order are
    those of one session, also under concurrent callers."""
    texts = [f"{t} ({i})" for i in range(12) for t in TEXTS]
    one = SentenceEncoder(backend="onnx", cache_dir=onnx_cache, sessions=1, threads=1, batch_size=4)
    two = SentenceEncoder(backend="onnx", cache_dir=onnx_cache, sessions=2, threads=1, batch_size=4)
    assert len(one._sessions) == 1 and len(two._sessions) == 2
    counted = [_CountingSession(s) for s in two._sessions]
    two._sessions = counted
    ref = one.encode(texts)
    np.testing.assert_allclose(two.encode(texts), ref, atol=1e-5)
    assert [c.runs for c in counted] == [9, 9]  # 72 texts in batches of 4, alternating
    assert len(counted[0].threads | counted[1].threads) == 2
    with ThreadPoolExecutor(3) as pool:
        for got in pool.map(lambda k: two.encode(texts[k:]), range(3)):
            assert got.shape[0] in (72, 71, 70)
            np.testing.assert_allclose(got, ref[72 - got.shape[0] :], atol=1e-5)
    assert len(SentenceEncoder(backend="onnx", cache_dir=onnx_cache)._sessions) == (os.cpu_count() or 1)
    assert onnx_fp32.derive(onnx_fp32.source).batch_size == onnx_fp32.batch_size


def test_int8_stays_close(encoder: SentenceEncoder, onnx_int8: SentenceEncoder) -> None:
    assert onnx_int8.backend == "onnx" and onnx_int8.quantized
    assert onnx_int8.onnx_path.name == int8_name()
    cos = (onnx_int8.encode(TEXTS) * encoder.encode(TEXTS)).sum(axis=1)
    assert cos.min() > 0.95 and cos.mean() > 0.98


def int8_name() -> str:
    return onnx_export.INT8_FILE.format(weights=onnx_export.int8_weight_type())


@pytest.mark.parametrize("weights", ["s8", "u8"])
def test_both_int8_weight_types_stay_close(
    weights: str,
    onnx_fp32: SentenceEncoder,
    encoder: SentenceEncoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Signed (VNNI) and unsigned (AVX2) weights both give vectors close to fp32 (run each, whatever this CPU has)."""
    folder = tmp_path / onnx_export.cache_key(Path(encoder.source))
    folder.mkdir()
    shutil.copy(onnx_fp32.onnx_path, folder / onnx_export.FP32_FILE)  # only the quantization runs
    monkeypatch.setattr(onnx_export, "int8_weight_type", lambda: weights)
    int8 = SentenceEncoder(backend="onnx", quantize=True, cache_dir=tmp_path)
    assert int8.onnx_path == folder / onnx_export.INT8_FILE.format(weights=weights)
    cos = (int8.encode(TEXTS) * onnx_fp32.encode(TEXTS)).sum(axis=1)
    assert cos.min() > 0.95 and cos.mean() > 0.98


def test_vnni_is_read_from_cpuinfo() -> None:
    flags = Path("/proc/cpuinfo").read_text()
    assert onnx_export.cpu_has_vnni() == ("avx512_vnni" in flags or "avx_vnni" in flags)
    assert onnx_export.int8_weight_type() == ("s8" if onnx_export.cpu_has_vnni() else "u8")


def test_export_is_cached_and_reused(
    onnx_cache: Path, onnx_fp32: SentenceEncoder, onnx_int8: SentenceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    [folder] = [p for p in onnx_cache.iterdir() if p.is_dir()]
    files = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert {onnx_export.FP32_FILE, int8_name()} <= set(files)
    assert not [p for p in folder.iterdir() if p.name.startswith(".export-")]

    def fail(*_: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "_export_fp32", fail)
    monkeypatch.setattr(onnx_export, "_quantize_int8", fail)
    again = SentenceEncoder(backend="onnx", quantize=True, cache_dir=onnx_cache)
    assert again.backend == "onnx" and again.onnx_path == onnx_int8.onnx_path
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == files


def test_a_changed_model_gets_its_own_cache_folder(tmp_path: Path, encoder: SentenceEncoder) -> None:
    src = Path(encoder.source)
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    first = onnx_export.cache_key(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert onnx_export.cache_key(tmp_path) != first
    with pytest.raises(onnx_export.ExportError):
        onnx_export.cache_key(tmp_path / "missing")


def test_failed_export_falls_back_to_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_export, "_export_fp32", broken)
    with caplog.at_level(logging.WARNING, logger="bot.core.encoder"):
        enc = SentenceEncoder(backend="onnx", cache_dir=tmp_path)
    assert enc.backend == "torch" and enc.requested_backend == "onnx"
    assert "exporter broke" in caplog.text and "using torch" in caplog.text
    assert enc.encode(["still works"]).shape == (1, enc.dim)
    assert not list(tmp_path.rglob("*.onnx"))


def test_derived_encoder_keeps_backend_and_precision(onnx_cache: Path, onnx_int8: SentenceEncoder) -> None:
    derived = onnx_int8.derive(onnx_int8.source)
    assert derived.backend == "onnx" and derived.quantized and derived.cache_dir == onnx_cache
    assert not onnx_int8.derive(onnx_int8.source, quantize=False).quantized


async def test_classify_with_onnx_gives_the_prompt_labels(
    onnx_fp32: SentenceEncoder, catalog: PromptCatalog, tmp_path: Path
) -> None:
    prompt = catalog.get("alliance")
    service = StanceService(catalog, ModelRegistry(onnx_fp32, build_dir=tmp_path).classifier)
    try:
        results = await service.classify_many(prompt.id, TEXTS)  # in the service's worker thread
    finally:
        await service.close()
    assert len(results) == len(TEXTS)
    assert {r.label for r in results} <= set(prompt.label_names) | {UNCLEAR}
    assert results[-1].label == UNCLEAR  # Japanese: the language gate


def test_evaluate_cli_with_onnx_backend(
    tmp_path: Path, catalog: PromptCatalog, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = catalog.get("defense")
    data = tmp_path / "few.jsonl"
    datasets.save_jsonl(data, datasets.load_split(prompt, "test")[:10])
    monkeypatch.setenv("STANCEBOT_MODEL_ONNX_CACHE_DIR", str(onnx_cache))
    args = ["evaluate", "--prompt", "defense", "--data", str(data), "--model", "similarity", "--no-speed"]
    result = CliRunner().invoke(main, [*args, "--backend", "onnx", "--quantize"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["backend"] == "onnx" and report["quantized"] is True
    assert set(report["per_label"]) == set(prompt.label_names)
    assert report["confusion"]["labels"] == list(prompt.label_names) and report["n"] == 10


def test_an_exported_encoder_runs_without_torch_or_transformers(onnx_fp32: SentenceEncoder) -> None:
    """The bot on ONNX Runtime never imports torch or transformers (about 250 MB of memory and a second of start-up),
    and its tokenizer gives the same vectors as the ``transformers`` one."""
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from bot.core.encoder import SentenceEncoder\n"
        f"enc = SentenceEncoder(backend='onnx', cache_dir=Path({str(onnx_fp32.cache_dir)!r}))\n"
        f"vectors = enc.encode({TEXTS!r})\n"
        "print(json.dumps({'backend': enc.backend, 'torch': 'torch' in sys.modules,\n"
        "                  'transformers': 'transformers' in sys.modules, 'vectors': vectors.tolist()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert (found["backend"], found["torch"], found["transformers"]) == ("onnx", False, False)
    assert np.allclose(np.array(found["vectors"]), onnx_fp32.encode(TEXTS), atol=1e-5)
