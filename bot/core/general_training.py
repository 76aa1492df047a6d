"""Training the general stance model (:mod:`bot.core.general`) across many prompts. Needs torch (the ``train``
extra).

Data: every prompt in ``models/data/general/`` (a ``<id>.toml`` prompt file and a ``<id>.jsonl`` of labelled
replies each) plus the seed prompts' train splits (capped, so that two prompts with thousands of replies do not
drown forty with a hundred and fifty). ``models/data/general/splits.toml`` names the held-out prompts (``test``:
never trained on, never used for a choice) and the ``dev`` prompts (the epoch, temperature and threshold are chosen
on them); every other prompt trains.

Each training step shows a reply with its prompt's labels in a random order (and now and then without the
question), so the network learns to read the options rather than to remember where a label sits.
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
from bot.core.general import Choices, InputBuilder, label_text
from bot.core.prompts import UNCLEAR, Prompt, load_prompt
from bot.core.scoring import macro_f1
from bot.core.stance import softmax

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

GENERAL_DIR = data_dir() / "general"
SPLITS_FILE = "splits.toml"
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GeneralConfig:
    """The recipe; every field is recorded in the shipped model's manifest."""

    seed: int = 13
    layers: int = 3
    epochs: int = 5
    lr: float = 6e-5
    head_lr: float = 1e-3
    batch: int = 16
    hidden: int = 256
    seed_prompt_cap: int = 600
    drop_question: float = 0.15
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
        out.append(PromptData(prompt, examples, role))
    unknown = (test | dev) - {p.prompt.id for p in out}
    if unknown:
        raise DataError(f"{root / SPLITS_FILE} names prompts with no data: {', '.join(sorted(unknown))}.")
    return out


def seed_prompts(prompts: Sequence[Prompt], cap: int, seed: int) -> list[PromptData]:
    """The seed prompts' train splits (at most ``cap`` replies each, drawn once with ``seed``), to train on."""
    out = []
    for prompt in prompts:
        train = [ex for ex in load_split(prompt, "train") if not {"ja", "other-lang"} & set(ex.tags)]
        rng = random.Random(seed)
        out.append(PromptData(prompt, rng.sample(train, min(cap, len(train))), "train", origin="seed"))
    return out


class GeneralNet:
    """The torch network behind the ONNX graph (built lazily so this module imports without torch)."""

    @staticmethod
    def build(base: str, layers: int, hidden: int) -> torch.nn.Module:
        """The first ``layers`` layers of the ``base`` encoder and a label scorer."""
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
                    torch.nn.Linear(3 * dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
                )

            def forward(
                self,
                input_ids: torch.Tensor,
                attention_mask: torch.Tensor,
                label_mask: torch.Tensor,
                reply_mask: torch.Tensor,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                hidden_states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                counts = label_mask.sum(-1, keepdim=True)
                seg = torch.einsum("bks,bsh->bkh", label_mask, hidden_states) / counts.clamp(min=1.0)
                cls = hidden_states[:, :1, :].expand(-1, seg.shape[1], -1)
                logits = self.scorer(torch.cat([seg, cls, seg * cls], dim=-1)).squeeze(-1)
                logits = torch.where(counts.squeeze(-1) > 0, logits, torch.full_like(logits, -1e4))
                rm = reply_mask.unsqueeze(-1)
                reply = (hidden_states * rm).sum(1) / rm.sum(1).clamp(min=1.0)
                return logits, torch.nn.functional.normalize(reply, dim=-1)

        return Net()


def _tensors(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {name: torch.from_numpy(value) for name, value in feed.items()}


def _shuffled(choices: Choices, gold: int, rng: random.Random, drop_question: float) -> tuple[Choices, int]:
    order = list(range(len(choices.labels)))
    rng.shuffle(order)
    question = "" if rng.random() < drop_question else choices.question
    shuffled = Choices(question, tuple(choices.labels[i] for i in order), tuple(choices.texts[i] for i in order))
    return shuffled, order.index(gold)


def predict(
    net: torch.nn.Module, builder: InputBuilder, replies: Sequence[str], choices: Sequence[Choices], batch: int = 32
) -> np.ndarray:
    """Raw scores ``(n, K)`` of the torch network (padding slots very negative), in eval mode."""
    import torch

    k = max(len(c.labels) for c in choices)
    out = np.full((len(replies), k), -1e4, dtype=np.float32)
    order = sorted(range(len(replies)), key=lambda i: len(replies[i]))
    net.eval()
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            feed, _ = builder.build([replies[i] for i in idx], [choices[i] for i in idx])
            logits, _ = net(**_tensors(feed))
            out[idx, : logits.shape[1]] = logits.numpy()
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
    tokenizer = Path(base or packaged_model_path()) / "tokenizer.json"
    builder = InputBuilder(tokenizer)
    net = GeneralNet.build(base, cfg.layers, cfg.hidden)
    items = [
        (ex.text, Choices.of(pd.prompt), pd.prompt.label_names.index(ex.label)) for pd in train for ex in pd.examples
    ]
    parts: Any = net  # the encoder and the scorer learn at different rates
    opt = torch.optim.AdamW(
        [
            {"params": parts.encoder.parameters(), "lr": cfg.lr},
            {"params": parts.scorer.parameters(), "lr": cfg.head_lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = (len(items) + cfg.batch - 1) // cfg.batch
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))
    dev_choices = {pd.prompt.id: [Choices.of(pd.prompt)] * len(pd.examples) for pd in dev}

    def dev_scores(pd: PromptData) -> np.ndarray:
        return predict(net, builder, [ex.text for ex in pd.examples], dev_choices[pd.prompt.id])

    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history = []
    for epoch in range(cfg.epochs):
        rng.shuffle(items)
        lengths = [len(text) for text, _, _ in items]
        # batches of similar reply length, in random order
        order = sorted(range(len(items)), key=lambda i: lengths[i] + rng.uniform(0, 40))
        batches = [order[i : i + cfg.batch] for i in range(0, len(order), cfg.batch)]
        rng.shuffle(batches)
        net.train()
        total_loss = 0.0
        for step, idx in enumerate(batches):
            shuffled = [_shuffled(items[i][1], items[i][2], rng, cfg.drop_question) for i in idx]
            feed, _ = builder.build([items[i][0] for i in idx], [c for c, _ in shuffled])
            logits, _ = net(**_tensors(feed))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([g for _, g in shuffled]))
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
        "n_train": len(items),
        "data_hash": data_hash([ex for pd in train + dev for ex in pd.examples]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    meta["version"] = f"L{cfg.layers}:{meta['data_hash'][:8]}"
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
    net = GeneralNet.build(base, cfg.layers, cfg.hidden)
    net.load_state_dict(torch.load(out_dir / "general.pt"))
    net.eval()
    source = Path(base or packaged_model_path())
    builder = InputBuilder(source / "tokenizer.json")
    sample = Choices(
        "A question?", ("yes", "no", UNCLEAR), (label_text("yes", "Agree."), "no: Disagree.", "unclear: x")
    )
    feed, _ = builder.build(["a reply", "a longer reply to trace"], [sample, sample])
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
                input_names=list(feed),
                output_names=["logits", "reply_embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "sequence"},
                    "attention_mask": {0: "batch", 1: "sequence"},
                    "label_mask": {0: "batch", 1: "labels", 2: "sequence"},
                    "reply_mask": {0: "batch", 1: "sequence"},
                    "logits": {0: "batch", 1: "labels"},
                    "reply_embedding": {0: "batch"},
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
        "inputs": ["input_ids", "attention_mask", "label_mask", "reply_mask"],
        "outputs": ["logits", "reply_embedding"],
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
