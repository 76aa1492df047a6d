"""Recipes that tune the encoder itself: the fine-tune (top layers and head, end to end) and the SetFit-style
contrastive step. They need the ``[train]`` extra (torch, transformers).
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.core.calibration import apply_threshold, gate_blocked
from bot.core.datasets import (
    Example,
)
from bot.core.encoder import SentenceEncoder
from bot.core.heads import ProgressFn, TrainConfig, calibrate_logits, fit_logistic, train_head
from bot.core.prompts import UNCLEAR
from bot.core.scoring import macro_f1
from bot.core.trained import ENCODER_DIR
from bot.core.training_data import labels_of

if TYPE_CHECKING:
    import torch


class _TunableEncoder:
    """The base encoder with its top ``layers`` layers trainable and the output of the lower ones cached per text.

    Shared by the fine-tune and the contrastive (SetFit-style) step: the frozen lower layers run once per text,
    each training step runs only the top layers.
    """

    def __init__(self, base: str, layers: int, max_length: int) -> None:
        from transformers import AutoModel, AutoTokenizer

        from bot.core.encoder import resolve_model

        source, _ = resolve_model(base)
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        self.model = AutoModel.from_pretrained(source, local_files_only=True)
        self.model.eval()
        self.k = max(0, len(self.model.encoder.layer) - layers)
        self.dim = int(self.model.config.hidden_size)
        self.max_length = max_length
        self.top = self.model.encoder.layer[self.k :]
        for param in self.model.parameters():
            param.requires_grad_(False)
        for param in self.top.parameters():
            param.requires_grad_(True)

    def lower(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """The (unpadded) hidden states entering the trainable layers, one tensor per text."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        cache: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            for start in range(0, len(order), 32):
                idx = order[start : start + 32]
                batch = self.tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=self.max_length,
                    return_tensors="pt",
                )  # fmt: skip
                hidden = self.model(**batch, output_hidden_states=True).hidden_states[self.k]
                for row, (j, n) in enumerate(zip(idx, batch["attention_mask"].sum(1).tolist(), strict=True)):
                    cache[j] = hidden[row, :n].clone()
        return [cache[i] for i in range(len(texts))]

    def embed(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Run the trainable layers on cached states; mean-pooled, unit-length embeddings."""
        import torch
        from transformers.masking_utils import create_bidirectional_mask

        length = max(s.shape[0] for s in states)
        x = torch.zeros(len(states), length, self.dim)
        mask = torch.zeros(len(states), length, dtype=torch.long)
        for i, s in enumerate(states):
            x[i, : s.shape[0]] = s
            mask[i, : s.shape[0]] = 1
        attn = create_bidirectional_mask(config=self.model.config, inputs_embeds=x, attention_mask=mask)
        for layer in self.top:
            x = layer(x, attn)
        m = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def embed_all(self, states: Sequence[torch.Tensor]) -> np.ndarray:
        """Embeddings of many cached texts in eval mode, as a numpy array."""
        import torch

        self.top.eval()
        with torch.inference_mode():
            parts = [self.embed(states[i : i + 64]) for i in range(0, len(states), 64)]
        self.top.train()
        return np.asarray(torch.cat(parts).numpy())

    def save(self, target: Path) -> None:
        """Write the whole encoder and its tokenizer to ``target`` (``save_pretrained`` format)."""
        for param in self.model.parameters():
            param.requires_grad_(False)
        if target.exists():
            shutil.rmtree(target)
        self.model.save_pretrained(target)
        self.tokenizer.save_pretrained(target)


def _length_batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[list[int]]:
    """Batches of similar length (little padding), in random order; the noise varies them between epochs."""
    order = np.argsort(lengths + rng.uniform(0, 4, len(lengths)), kind="stable")
    batches = [order[i : i + size].tolist() for i in range(0, len(order), size)]
    return [batches[int(b)] for b in rng.permutation(len(batches))]


def train_finetuned(
    names: Sequence[str],
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    folder: Path,
    *,
    base: str = "",
    init: tuple[np.ndarray, np.ndarray] | None = None,
    teacher: np.ndarray | None = None,
    unlabelled: Sequence[str] = (),
    progress: ProgressFn | None = None,
    stage: str = "fine-tune",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fine-tune the top ``cfg.ft_layers`` encoder layers and a head; saves the encoder to ``folder/encoder``.

    The lower layers are frozen and their output computed once; each epoch then runs only the top layers. The
    epoch with the best dev macro-F1 is kept. ``base`` is the encoder to start from (a folder; empty: the
    packaged one). With ``teacher`` (a teacher model's logits for ``train`` then ``unlabelled``, one row each) the
    loss is knowledge distillation: ``cfg.kd_alpha`` x cross entropy on the gold labels plus the rest x the KL
    divergence to the teacher's probabilities at ``cfg.kd_temperature``; ``unlabelled`` texts get the KL term only.
    Returns ``(weights, bias, info)``.
    """
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    enc = _TunableEncoder(base, cfg.ft_layers, cfg.ft_max_length)
    top = enc.top
    head = torch.nn.Linear(enc.dim, len(names))
    if init is not None:
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(init[0]))
            head.bias.copy_(torch.from_numpy(np.clip(init[1], -50, 50)))

    train_states = enc.lower([ex.text for ex in train] + list(unlabelled))
    dev_states = enc.lower([ex.text for ex in dev])
    gold = torch.from_numpy(labels_of(train, names))
    y = torch.cat([gold, torch.full((len(unlabelled),), -100, dtype=torch.long)])  # -100: no gold label
    y_dev = labels_of(dev, names)
    blocked = gate_blocked([ex.text for ex in dev])
    unclear = names.index(UNCLEAR)
    counts = torch.bincount(gold, minlength=len(names)).to(torch.float32).clamp(min=1)
    weight = counts.sum() / (len(names) * counts)
    kd_t = cfg.kd_temperature
    soft = None
    if teacher is not None:
        if len(teacher) != len(train_states):
            raise ValueError("teacher logits need one row per train and unlabelled text")
        soft = torch.softmax(torch.from_numpy(np.asarray(teacher, dtype=np.float32)) / kd_t, dim=-1)
    opt = torch.optim.AdamW(
        [{"params": top.parameters(), "lr": cfg.ft_lr}, {"params": head.parameters(), "lr": cfg.ft_head_lr}],
        weight_decay=0.01,
    )
    per_epoch = (len(train_states) + cfg.ft_batch - 1) // cfg.ft_batch
    total = cfg.ft_epochs * per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))

    def dev_logits() -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(head(torch.from_numpy(enc.embed_all(dev_states))).numpy())

    best_f1, best_epoch = -1.0, 0
    best_state: dict[str, Any] = {}
    history = []
    step = 0
    top.train()
    lengths = np.array([s.shape[0] for s in train_states], dtype=np.float64)
    for epoch in range(cfg.ft_epochs):
        for idx in _length_batches(lengths, cfg.ft_batch, rng):
            logits = head(enc.embed([train_states[i] for i in idx]))
            has_gold = y[idx] >= 0
            loss = (
                torch.nn.functional.cross_entropy(logits[has_gold], y[idx][has_gold], weight=weight)
                if bool(has_gold.any())
                else logits.sum() * 0.0
            )
            if soft is not None:
                log_p = torch.nn.functional.log_softmax(logits / kd_t, dim=-1)
                kd = torch.nn.functional.kl_div(log_p, soft[idx], reduction="batchmean") * kd_t * kd_t
                loss = cfg.kd_alpha * loss + (1.0 - cfg.kd_alpha) * kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(f"{stage}: epoch {epoch + 1}/{cfg.ft_epochs}", step, total)
        pred = apply_threshold(dev_logits(), 0.0, unclear, blocked)
        f1 = macro_f1(y_dev.tolist(), pred.tolist(), len(names))
        history.append(round(f1, 4))
        if f1 > best_f1 + 1e-9:
            best_f1, best_epoch = f1, epoch + 1
            best_state = {"top": copy.deepcopy(top.state_dict()), "head": copy.deepcopy(head.state_dict())}
    top.load_state_dict(best_state["top"])
    head.load_state_dict(best_state["head"])
    target = folder / ENCODER_DIR
    enc.save(target)
    w = head.weight.detach().numpy().astype(np.float32)
    b = head.bias.detach().numpy().astype(np.float32)
    info: dict[str, Any] = {
        "layers_tuned": cfg.ft_layers,
        "epochs": cfg.ft_epochs,
        "best_epoch": best_epoch,
        "dev_macro_f1_by_epoch": history,
        "lr": cfg.ft_lr,
    }
    if teacher is not None:
        info.update(kd_alpha=cfg.kd_alpha, kd_temperature=kd_t, unlabelled_texts=len(unlabelled))
    # calibrate on what the saved model really computes (also proves the folder loads)
    tuned = SentenceEncoder(str(target))
    x_dev = tuned.encode([ex.text for ex in dev])
    info.update(calibrate_logits(x_dev @ w.T + b, y_dev, unclear, blocked, cfg))
    return w, b, info


def contrastive_loss(emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SetFit's cosine-similarity loss over every pair in a batch of unit embeddings.

    Squared error between each pair's cosine and its target (1 for the same label, 0 for different labels); the
    same-label and different-label pairs weigh half each, however many of each the batch holds.
    """
    import torch

    sim = emb @ emb.T
    same = (y[:, None] == y[None, :]).to(emb.dtype)
    off = 1.0 - torch.eye(len(y), dtype=emb.dtype)
    pos, neg = same * off, (1.0 - same) * off
    pos_loss = ((sim - 1.0) ** 2 * pos).sum() / pos.sum().clamp(min=1.0)
    neg_loss = (sim**2 * neg).sum() / neg.sum().clamp(min=1.0)
    return 0.5 * (pos_loss + neg_loss)


def train_setfit(
    encoder: SentenceEncoder,
    names: Sequence[str],
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    folder: Path,
    *,
    extra: Sequence[Example] = (),
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """SetFit-style: contrastive tuning of the encoder on label pairs, then the logistic head on its embeddings.

    The top ``cfg.sf_layers`` layers are trained so that replies with the same label embed close together and
    replies with different labels apart (:func:`contrastive_loss` over all pairs in each batch). After each epoch
    a logistic head (C=1) is fitted on the train embeddings and scored on dev; the best epoch's encoder is saved
    to ``folder/encoder``, and the head is then fitted on it like the ``head`` variant (C, temperature and the
    ``unclear`` threshold chosen on dev). ``encoder`` is only used for its name. Returns ``(weights, bias, info)``.
    """
    import torch

    del encoder  # the contrastive step starts from the packaged base encoder, as the fine-tune does
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    enc = _TunableEncoder("", cfg.sf_layers, cfg.ft_max_length)
    texts = [ex.text for ex in train]
    labels = labels_of(train, names)
    if extra:  # e.g. the prompt's label descriptions and examples, as extra pair members
        texts += [ex.text for ex in extra]
        labels = np.concatenate([labels, labels_of(extra, names)])
    train_states = enc.lower(texts)
    fit_states = train_states[: len(train)]
    dev_states = enc.lower([ex.text for ex in dev])
    y = torch.from_numpy(labels)
    y_train, y_dev = labels[: len(train)], labels_of(dev, names)
    blocked = gate_blocked([ex.text for ex in dev])
    unclear = names.index(UNCLEAR)
    opt = torch.optim.AdamW(enc.top.parameters(), lr=cfg.sf_lr, weight_decay=0.01)
    per_epoch = (len(texts) + cfg.sf_batch - 1) // cfg.sf_batch
    total = cfg.sf_epochs * per_epoch
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total))

    def dev_score() -> float:
        w, b = fit_logistic(enc.embed_all(fit_states), y_train, len(names), c=1.0, seed=cfg.seed)
        pred = apply_threshold(enc.embed_all(dev_states) @ w.T + b, 0.0, unclear, blocked)
        return macro_f1(y_dev.tolist(), pred.tolist(), len(names))

    best_f1, best_epoch = dev_score(), 0
    best_state = copy.deepcopy(enc.top.state_dict())
    lengths = np.array([s.shape[0] for s in train_states], dtype=np.float64)
    history = [round(best_f1, 4)]
    step = 0
    enc.top.train()
    for epoch in range(cfg.sf_epochs):
        # batches of similar length still mix labels, so each holds both kinds of pairs
        for idx in _length_batches(lengths, cfg.sf_batch, rng):
            loss = contrastive_loss(enc.embed([train_states[i] for i in idx]), y[idx])
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            step += 1
            if progress:
                progress(f"setfit: contrastive epoch {epoch + 1}/{cfg.sf_epochs}", step, total)
        f1 = dev_score()
        history.append(round(f1, 4))
        if f1 > best_f1 + 1e-9:
            best_f1, best_epoch = f1, epoch + 1
            best_state = copy.deepcopy(enc.top.state_dict())
    enc.top.load_state_dict(best_state)
    target = folder / ENCODER_DIR
    enc.save(target)
    info: dict[str, Any] = {
        "layers_tuned": cfg.sf_layers,
        "contrastive_epochs": cfg.sf_epochs,
        "best_epoch": best_epoch,
        "dev_macro_f1_by_epoch": history,
        "lr": cfg.sf_lr,
        "extra_pair_texts": len(extra),
    }
    # the head on what the saved encoder really computes (also proves the folder loads)
    w, b, head_info = train_head(SentenceEncoder(str(target)), names, train, dev, cfg, progress, "setfit head")
    info.update(head_info)
    return w, b, info
