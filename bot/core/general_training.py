"""Training the general stance model (:mod:`bot.core.general`) across many prompts. Needs torch (the ``train``
extra).

Data: every prompt in ``models/data/general/`` (a ``<id>.toml`` prompt file and a ``<id>.jsonl`` of labelled
replies each, and for some train prompts ``realtrain/<id>.jsonl``: real public statements rewritten as replies)
plus the seed prompts' train splits (capped, so that two prompts with thousands of replies do not drown forty with
a hundred and fifty) and their real-statement paraphrases. ``models/data/general/splits.toml`` names the held-out
prompts (``test``: never trained on, never used for a choice) and the ``dev`` prompts (the epoch, temperature and
threshold are chosen on them); every other prompt trains.

Each training step takes a batch of one prompt's replies: its labels are encoded (with gradients) once for the
batch, the replies with the question after them, and the scorer's softmax over the prompt's labels is trained with
cross-entropy. The scorer is the same function for every label (it sees only the label's vectors), so no label
position can be remembered.
"""

from __future__ import annotations

import logging
import random
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.assets import data_dir
from bot.core.datasets import DataError, Example, data_hash, for_prompt, load_jsonl, load_split
from bot.core.files import write_json_atomic
from bot.core.general import INPUTS, LABEL_TOKENS, OUTPUTS, Choices, InputBuilder, label_inputs
from bot.core.prompts import UNCLEAR, Prompt, load_prompt
from bot.core.scoring import macro_f1
from bot.core.stance import softmax
from bot.core.training_data import realtrain_files

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

GENERAL_DIR = data_dir() / "general"
SPLITS_FILE = "splits.toml"
#: Real public statements about a train prompt, rewritten as replies (the real-statement test sets are ``real/``).
REALTRAIN = "realtrain"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GeneralConfig:
    """The recipe; every field is recorded in the shipped model's manifest."""

    seed: int = 13
    layers: int = 6
    epochs: int = 4
    lr: float = 3e-5
    head_lr: float = 1e-3
    batch: int = 24
    hidden: int = 256
    seed_prompt_cap: int = 600
    drop_question: float = 0.0
    weight_decay: float = 0.01


@dataclass
class PromptData:
    """One prompt with its labelled replies and its role (``train``, ``dev`` or ``test``)."""

    prompt: Prompt
    examples: list[Example]
    role: str
    origin: str = "general"
    extra: dict[str, Any] = field(default_factory=dict)


def load_general(root: Path = GENERAL_DIR) -> list[PromptData]:
    """The prompts of ``root`` with their replies and roles (see the module docstring)."""
    try:
        roles = tomllib.loads((root / SPLITS_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"{root / SPLITS_FILE} cannot be read ({exc}).") from None
    test, dev = set(roles.get("test", [])), set(roles.get("dev", []))
    out = []
    for path in sorted(root.glob("*.toml")):
        if path.name == SPLITS_FILE:
            continue
        prompt = load_prompt(path)
        data = root / f"{prompt.id}.jsonl"
        examples = for_prompt(load_jsonl(data), prompt, where=str(data))
        role = "test" if prompt.id in test else "dev" if prompt.id in dev else "train"
        if role == "train":  # never for dev or test prompts: they stay as written
            for real in realtrain_files(prompt, root / REALTRAIN):
                examples += for_prompt(load_jsonl(real), prompt, where=str(real))
        out.append(PromptData(prompt, examples, role))
    unknown = (test | dev) - {p.prompt.id for p in out}
    if unknown:
        raise DataError(f"{root / SPLITS_FILE} names prompts with no data: {', '.join(sorted(unknown))}.")
    return out


def seed_prompts(prompts: Sequence[Prompt], cap: int, seed: int) -> list[PromptData]:
    """The seed prompts' train splits (at most ``cap`` replies each, drawn once with ``seed``) and all their
    real-statement paraphrases, to train on."""
    out = []
    for prompt in prompts:
        train = [ex for ex in load_split(prompt, "train") if not {"ja", "other-lang"} & set(ex.tags)]
        rng = random.Random(seed)
        examples = rng.sample(train, min(cap, len(train)))
        for path in realtrain_files(prompt):
            examples += for_prompt(load_jsonl(path), prompt, where=str(path))
        out.append(PromptData(prompt, examples, "train", origin="seed"))
    return out


class GeneralNet:
    """The torch network behind the ONNX graph (built lazily so this module imports without torch)."""

    @staticmethod
    def build(base: str, layers: int, hidden: int) -> torch.nn.Module:
        """The first ``layers`` layers of the ``base`` encoder and the label scorer (see :mod:`bot.core.general`)."""
        import torch
        from transformers import AutoModel

        from bot.core.encoder import resolve_model

        source, _ = resolve_model(base)
        encoder = AutoModel.from_pretrained(source, local_files_only=True, attn_implementation="eager")
        encoder.encoder.layer = encoder.encoder.layer[:layers]
        encoder.config.num_hidden_layers = layers
        dim = int(encoder.config.hidden_size)

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder
                self.scorer = torch.nn.Sequential(
                    torch.nn.Linear(5 * dim + 2, hidden),
                    torch.nn.GELU(),
                    torch.nn.Dropout(0.1),
                    torch.nn.Linear(hidden, 1),
                )
                self.scale = torch.nn.Parameter(torch.tensor(10.0))

            def embed(
                self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor
            ) -> torch.Tensor:
                """Unit vectors of the pooled tokens."""
                states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                pooled = (states * pool_mask.unsqueeze(-1)).sum(1) / pool_mask.sum(1, keepdim=True).clamp(min=1.0)
                return torch.nn.functional.normalize(pooled, dim=-1)

            def score(self, reply: torch.Tensor, described: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
                """Logits ``(B, K)`` of replies ``(B, dim)`` against the labels' vectors ``(K, dim)``."""
                d_off = described - described.mean(0, keepdim=True)
                e_off = examples - examples.mean(0, keepdim=True)
                r = reply.unsqueeze(1).expand(-1, described.shape[0], -1)
                cos_d = (r * described).sum(-1, keepdim=True)
                cos_e = (r * examples).sum(-1, keepdim=True)
                parts = [r * described, r * examples, r * d_off, r * e_off, (r - described).abs(), cos_d, cos_e]
                learned: torch.Tensor = self.scorer(torch.cat(parts, dim=-1)).squeeze(-1)
                return learned + self.scale * cos_d.squeeze(-1)

            def forward(
                self,
                input_ids: torch.Tensor,
                attention_mask: torch.Tensor,
                pool_mask: torch.Tensor,
                label_descriptions: torch.Tensor,
                label_examples: torch.Tensor,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                reply = self.embed(input_ids, attention_mask, pool_mask)
                return self.score(reply, label_descriptions, label_examples), reply

        return Net()


def _tensors(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(value) for name, value in feed.items()}


def label_vectors(net: Any, builder: InputBuilder, choices: Choices) -> tuple[torch.Tensor, torch.Tensor]:
    """Each label text's vector and its examples' mean vector (unit length), as the bot computes them."""
    import torch

    described = net.embed(**_tensors(builder.build(choices.texts, budget=LABEL_TOKENS)))
    flat, sizes = choices.flat_examples()
    vectors = net.embed(**_tensors(builder.build(flat, budget=LABEL_TOKENS)))
    means = torch.stack([part.mean(0) for part in torch.split(vectors, sizes)])
    return described, torch.nn.functional.normalize(means, dim=-1)


def predict(net: Any, builder: InputBuilder, replies: Sequence[str], choices: Choices, batch: int = 64) -> np.ndarray:
    """Raw scores ``(n, K)`` of the torch network for replies to one prompt, in eval mode."""
    import torch

    out = np.zeros((len(replies), len(choices.labels)), dtype=np.float32)
    order = sorted(range(len(replies)), key=lambda i: len(replies[i]))
    net.eval()
    with torch.inference_mode():
        described, examples = label_vectors(net, builder, choices)
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            reply = net.embed(**_tensors(builder.build([replies[i] for i in idx], choices.question)))
            out[idx] = net.score(reply, described, examples).numpy()
    net.train()
    return out


def score_prompts(
    scores_of: Callable[[PromptData], np.ndarray], prompts: Sequence[PromptData], temperature: float, threshold: float
) -> dict[str, float]:
    """Macro-F1 per prompt of a scorer, with ``unclear`` below ``threshold`` confidence."""
    out = {}
    for pd in prompts:
        probs = softmax(scores_of(pd).astype(np.float64), temperature)
        pred = probs.argmax(axis=1)
        unclear = pd.prompt.label_names.index(UNCLEAR)
        pred = np.where((pred != unclear) & (probs.max(axis=1) < threshold), unclear, pred)
        gold = [pd.prompt.label_names.index(ex.label) for ex in pd.examples]
        out[pd.prompt.id] = round(macro_f1(gold, pred.tolist(), len(pd.prompt.label_names)), 4)
    return out


def _batches(train: Sequence[PromptData], size: int, rng: random.Random) -> list[tuple[PromptData, list[int]]]:
    """One epoch's batches: each holds replies of one prompt (its labels are encoded once for the batch)."""
    out = []
    for pd in train:
        idx = list(range(len(pd.examples)))
        rng.shuffle(idx)
        out += [(pd, idx[s : s + size]) for s in range(0, len(idx), size)]
    rng.shuffle(out)
    return out


def train_general(
    data: Sequence[PromptData],
    out_dir: Path,
    *,
    base: str = "",
    config: GeneralConfig | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train the general model on the ``train`` prompts, choose on the ``dev`` prompts, never read ``test``;
    save the torch network to ``out_dir/general.pt`` and its recipe and figures to ``out_dir/general.json``."""

    import torch

    from bot.core.calibration import fit_temperature
    from bot.core.encoder import packaged_model_path

    cfg = config or GeneralConfig()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    started = time.perf_counter()
    train = [pd for pd in data if pd.role == "train"]
    dev = [pd for pd in data if pd.role == "dev"]
    if not train or not dev:
        raise DataError("General training needs train and dev prompts (models/data/general/splits.toml).")
    builder = InputBuilder(Path(base or packaged_model_path()) / "tokenizer.json")
    net: Any = GeneralNet.build(base, cfg.layers, cfg.hidden)
    opt = torch.optim.AdamW(
        [  # the encoder and the scorer learn at different rates
            {"params": net.encoder.parameters(), "lr": cfg.lr},
            {"params": [*net.scorer.parameters(), net.scale], "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = len(_batches(train, cfg.batch, random.Random(0)))
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))
    choices = {pd.prompt.id: Choices.of(pd.prompt) for pd in [*train, *dev]}
    gold = {pd.prompt.id: [pd.prompt.label_names.index(ex.label) for ex in pd.examples] for pd in train}

    def dev_scores(pd: PromptData) -> np.ndarray:
        return predict(net, builder, [ex.text for ex in pd.examples], choices[pd.prompt.id])

    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history = []
    for epoch in range(cfg.epochs):
        batches = _batches(train, cfg.batch, rng)
        net.train()
        total_loss = 0.0
        for step, (pd, idx) in enumerate(batches):
            choice = choices[pd.prompt.id]
            question = choice.question if rng.random() >= cfg.drop_question else ""
            described, examples = label_vectors(net, builder, choice)
            reply = net.embed(**_tensors(builder.build([pd.examples[i].text for i in idx], question)))
            target = torch.tensor([gold[pd.prompt.id][i] for i in idx])
            loss = torch.nn.functional.cross_entropy(net.score(reply, described, examples), target)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            total_loss += float(loss.detach())
            if progress:
                progress(f"general: epoch {epoch + 1}/{cfg.epochs}", step + 1, len(batches))
        per_prompt = score_prompts(dev_scores, dev, 1.0, 0.0)
        mean = float(np.mean(list(per_prompt.values())))
        history.append({"epoch": epoch + 1, "loss": round(total_loss / len(batches), 4), "dev_mean_macro_f1": mean})
        log.info("General model epoch %d: loss %.4f, dev mean macro-F1 %.4f", epoch + 1, history[-1]["loss"], mean)
        if best is None or mean > best[0]:
            best = (mean, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
    assert best is not None
    net.load_state_dict(best[2])
    # temperature and the unclear threshold, on the dev prompts
    dev_logits = {pd.prompt.id: dev_scores(pd) for pd in dev}
    temperature = float(
        np.mean(
            [
                fit_temperature(
                    dev_logits[pd.prompt.id], np.array([pd.prompt.label_names.index(ex.label) for ex in pd.examples])
                )
                for pd in dev
            ]
        )
    )
    grid = {}
    for t in np.round(np.arange(0.0, 0.81, 0.05), 2):
        per = score_prompts(lambda pd: dev_logits[pd.prompt.id], dev, temperature, float(t))
        grid[float(t)] = float(np.mean(list(per.values())))
    threshold = max(grid, key=lambda t: (round(grid[t], 4), -t))
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out_dir / "general.pt")
    meta: dict[str, Any] = {
        "kind": "general",
        "config": asdict(cfg),
        "base_encoder": base or "all-MiniLM-L6-v2",
        "best_epoch": best[1],
        "history": history,
        "temperature": round(temperature, 4),
        "threshold": threshold,
        "dev_mean_macro_f1": round(grid[threshold], 4),
        "dev_per_prompt": score_prompts(lambda pd: dev_logits[pd.prompt.id], dev, temperature, threshold),
        "train_prompts": sorted({pd.prompt.id for pd in train}),
        "dev_prompts": sorted(pd.prompt.id for pd in dev),
        "test_prompts": sorted(pd.prompt.id for pd in data if pd.role == "test"),
        "n_train": sum(len(pd.examples) for pd in train),
        "data_hash": data_hash([ex for pd in train + dev for ex in pd.examples]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    meta["version"] = f"bi{cfg.layers}:{meta['data_hash'][:8]}"
    write_json_atomic(out_dir / "general.json", meta)
    return meta


def export_general(out_dir: Path, ship_root: Path, *, base: str = "") -> Path:
    """Export the trained network in ``out_dir`` to ``ship_root/general/model.onnx`` (int8, as shipped models are)
    with its ``config.json`` and manifest entry."""
    import json
    import shutil
    import tempfile

    import torch

    from bot.core import shipped
    from bot.core.encoder import packaged_model_path
    from bot.core.onnx_export import OPSET, SHIPPED_QUANTIZATION, _quantize_for_shipping

    meta = json.loads((out_dir / "general.json").read_text(encoding="utf-8"))
    cfg = GeneralConfig(**meta["config"])
    net: Any = GeneralNet.build(base, cfg.layers, cfg.hidden)
    net.load_state_dict(torch.load(out_dir / "general.pt"))
    net.eval()
    source = Path(base or packaged_model_path())
    builder = InputBuilder(source / "tokenizer.json")
    dim = int(net.encoder.config.hidden_size)
    feed = {**builder.build(["a reply", "a longer reply to trace"], "A question?"), **label_inputs(dim, 3)}
    folder = ship_root / "general"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ship-", dir=ship_root))
    try:
        with torch.no_grad():
            torch.onnx.export(
                net,
                (),
                str(tmp / "fp32.onnx"),
                kwargs=_tensors(feed),
                input_names=list(INPUTS),
                output_names=list(OUTPUTS),
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "pool_mask": {0: "batch", 1: "sequence"},
                    "label_descriptions": {0: "labels"},
                    "label_examples": {0: "labels"},
                    "logits": {0: "batch", 1: "labels"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        _quantize_for_shipping(tmp / "fp32.onnx", tmp / shipped.WEIGHTS)
        shared = ship_root / shipped.TOKENIZER_DIR
        shared.mkdir(exist_ok=True)
        for file in shipped.TOKENIZER_FILES:
            if not (shared / file).is_file():
                shutil.copyfile(source / file, shared / file)
        (tmp / shipped.WEIGHTS).replace(folder / shipped.WEIGHTS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config = {
        "name": "general",
        "kind": "general",
        "version": meta["version"],
        "temperature": meta["temperature"],
        "threshold": meta["threshold"],
        "layers": cfg.layers,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "opset": OPSET,
        "quantization": SHIPPED_QUANTIZATION,
    }
    write_json_atomic(folder / shipped.CONFIG, config)
    entry = {key: meta[key] for key in ("kind", "version", "temperature", "threshold", "data_hash", "n_train")}
    entry.update(
        dev_mean_macro_f1=meta["dev_mean_macro_f1"],
        dev_per_prompt=meta["dev_per_prompt"],
        train_prompts=meta["train_prompts"],
        dev_prompts=meta["dev_prompts"],
        test_prompts=meta["test_prompts"],
        recipe={"command": "stancebot train --general", "config": meta["config"], "best_epoch": meta["best_epoch"]},
    )
    shipped.update_manifest(ship_root, "general", entry)
    return folder
