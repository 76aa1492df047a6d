"""Training recipe for a prompt's stance model: a linear head on frozen or tuned embeddings, or a fine-tuned encoder.

``train_prompt`` fits on the committed train split (plus any extra labelled replies), chooses everything it
chooses on the dev split (regularisation, epochs, temperature, the ``unclear`` threshold) and never reads test.

* ``head``: multinomial logistic regression on the shared encoder's embeddings, class-balanced, C chosen on dev.
  Seconds.
* ``finetune``: the top layers of the encoder and a linear head trained end to end with class-weighted cross
  entropy (lower layers frozen and their output cached, so an epoch costs a fraction of a full pass). Minutes.
* ``setfit``: SetFit-style. The encoder is first tuned contrastively (replies with the same label pulled
  together, different labels pushed apart: cosine-similarity loss over all pairs in each batch), then the ``head``
  recipe runs on the tuned embeddings. Minutes.
* ``distil``: the fine-tune as a teacher, then a student made of its first ``kd_layers`` layers trained on the
  teacher's probabilities and the gold labels (knowledge distillation). About twice as fast at inference. Minutes.
* ``auto``: head, fine-tune and the distilled student; keeps the best on dev macro-F1, preferring the student when
  it is within :data:`FAST_MARGIN` of the best (it is faster) and the head on a tie with the fine-tune.
"""

from __future__ import annotations

import copy
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bot.core.datasets import (
    SEED,
    SPLITS_DIR,
    DataError,
    Example,
    data_hash,
    dedupe_key,
    for_prompt,
    has_splits,
    load_jsonl,
    load_split,
    split_examples,
)
from bot.core.encoder import SentenceEncoder
from bot.core.prompts import UNCLEAR, Prompt
from bot.core.scoring import macro_f1
from bot.core.stance import prompt_fingerprint, softmax, unsupported_language
from bot.core.text import has_words, normalise_reply
from bot.core.trained import ENCODER_DIR, HeadClassifier

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

VARIANTS = ("head", "finetune", "setfit", "small", "distil", "auto")
#: Precision the non-``unclear`` labels should reach on dev; the threshold is chosen for it.
PRECISION_TARGET = 0.9
#: ...while still giving a stance to at least this share of the replies that have one (else: best macro-F1).
MIN_COVERAGE = 0.7

#: Called with (stage description, steps done, steps total) while training; for a progress bar.
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the recipe (the defaults were chosen on the dev splits)."""

    seed: int = SEED
    c_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    ft_layers: int = 3
    ft_epochs: int = 6
    ft_lr: float = 2e-4
    ft_head_lr: float = 2e-3
    ft_batch: int = 16
    ft_max_length: int = 128
    sf_layers: int = 6
    sf_epochs: int = 8
    sf_lr: float = 1e-4
    sf_batch: int = 32
    sf_label_texts: bool = True
    #: ``small`` variant: how many of the encoder's transformer layers it keeps (fewer layers, faster inference).
    small_layers: int = 2
    #: ``distilled`` variant: the student keeps this many layers; the loss mixes the gold labels (weight
    #: ``kd_alpha``) and the teacher's probabilities at temperature ``kd_temperature``.
    kd_layers: int = 3
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    kd_epochs: int = 8
    #: How many fine-tuned teachers (seeds ``seed``, ``seed + 1``, ...) the student learns from, averaged.
    kd_teachers: int = 1
    #: At most this many unlabelled texts join the distillation (a fixed-seed sample when there are more).
    kd_unlabelled: int = 4000
    precision_target: float = PRECISION_TARGET


# ---------------------------------------------------------------------------------------------------------------
# metrics shared with evaluation


def apply_threshold(probs: np.ndarray, threshold: float, unclear: int, blocked: np.ndarray | None = None) -> np.ndarray:
    """Arg-max labels, with stances below ``threshold`` (and ``blocked`` rows) turned into ``unclear``."""
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    pred = np.where((pred != unclear) & (conf < threshold), unclear, pred)
    if blocked is not None:
        pred = np.where(blocked, unclear, pred)
    return np.asarray(pred)


def stance_precision(y: np.ndarray, pred: np.ndarray, unclear: int) -> tuple[float, float]:
    """``(precision, coverage)`` of the non-``unclear`` predictions: share correct, and share of all replies."""
    mask = pred != unclear
    if not mask.any():
        return 1.0, 0.0
    return float((pred[mask] == y[mask]).mean()), float(mask.mean())


def choose_threshold(
    probs: np.ndarray,
    y: np.ndarray,
    unclear: int,
    *,
    target: float = PRECISION_TARGET,
    blocked: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``unclear`` threshold for a model, chosen on dev.

    The lowest threshold at which the non-``unclear`` labels reach ``target`` precision while still covering at
    least :data:`MIN_COVERAGE` of the replies that have a stance; when none does, the one with the best macro-F1.
    """
    n_labels = probs.shape[1]
    stance_share = float((y != unclear).mean())
    rows = []
    for t in np.round(np.arange(0.0, 0.96, 0.01), 2):
        pred = apply_threshold(probs, float(t), unclear, blocked)
        precision, coverage = stance_precision(y, pred, unclear)
        rows.append((float(t), precision, coverage, macro_f1(y.tolist(), pred.tolist(), n_labels)))
    meeting = [r for r in rows if r[1] >= target and r[2] >= MIN_COVERAGE * stance_share]
    met = bool(meeting)
    best = meeting[0] if met else max(rows, key=lambda r: (r[3], -r[0]))
    return {
        "threshold": best[0],
        "dev_precision": round(best[1], 4),
        "dev_coverage": round(best[2], 4),
        "dev_macro_f1_at_threshold": round(best[3], 4),
        "precision_target": target,
        "precision_target_met": met,
    }


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood of ``y`` (grid search)."""
    best_t, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 121)):
        p = softmax(logits, float(t))
        nll = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return round(best_t, 4)


def gate_blocked(texts: Sequence[str], *, max_chars: int = 2000) -> np.ndarray:
    """True for texts the gate answers itself (empty, no words, unsupported language): the model never sees them."""
    out = []
    for raw in texts:
        text = normalise_reply(raw or "", max_chars=max_chars)
        out.append(not text or not has_words(text) or unsupported_language(text) is not None)
    return np.array(out, dtype=bool)


# ---------------------------------------------------------------------------------------------------------------
# data


def fewshot_examples(prompt: Prompt) -> list[Example]:
    """The prompt's own label descriptions and examples as labelled replies (what a new prompt starts with)."""
    return [
        Example(text, label.name, prompt.id, "prompt")
        for label in prompt.labels
        for text in (label.description, *label.examples)
    ]


def _test_split(prompt: Prompt) -> list[Example]:
    """The prompt's committed test split if it has one (only to keep its texts out of training), else nothing."""
    return load_split(prompt, "test") if has_splits(prompt.id) else []


def training_data(
    prompt: Prompt, *, data: Sequence[Example] | None = None, extra_files: Sequence[Path] = (), seed: int = SEED
) -> tuple[list[Example], list[Example]]:
    """``(train, dev)`` for a prompt.

    Train is ``data`` when given, else the committed train split; replies from ``extra_files`` (e.g. moderator
    corrections) are added, except those also in dev or test (no leak). Dev is the committed dev split; a prompt
    without splits has 20% of its data held out as dev instead.
    """
    extra: list[Example] = []
    for path in extra_files:
        extra += for_prompt(load_jsonl(path), prompt, where=str(path))
    if has_splits(prompt.id):
        train = list(data) if data is not None else load_split(prompt, "train")
        dev = load_split(prompt, "dev")
        held = {dedupe_key(ex.text) for ex in dev} | {dedupe_key(ex.text) for ex in load_split(prompt, "test")}
        kept = [ex for ex in extra if dedupe_key(ex.text) not in held]
        if len(kept) < len(extra):
            log.warning(
                "%d extra replies are in the dev/test splits and were left out of training", len(extra) - len(kept)
            )
        return for_prompt(train, prompt) + kept, dev
    pool = for_prompt(list(data or []) + extra, prompt)
    if len(pool) < 10:
        raise DataError(
            f"Prompt {prompt.id!r} has no committed splits and only {len(pool)} labelled replies; "
            "pass labelled replies with --data (it keeps the similarity model until then)."
        )
    parts = split_examples(pool, seed=seed, dev=0.2, test=0.0, min_hard_test=0)
    return parts["train"], parts["dev"]


# ---------------------------------------------------------------------------------------------------------------
# training


def _labels_of(examples: Sequence[Example], names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[ex.label] for ex in examples], dtype=np.int64)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, n_labels: int, *, c: float, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression; ``(weights, bias)`` with a row for every label."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=5000, random_state=seed, class_weight="balanced")
    clf.fit(x, y)
    weights = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
    bias = np.full(n_labels, -1e4, dtype=np.float32)  # labels with no examples are never predicted
    classes = [int(c) for c in clf.classes_]
    if len(classes) == 2:
        coef = np.stack([-clf.coef_[0], clf.coef_[0]]) / 2
        icpt = np.array([-clf.intercept_[0], clf.intercept_[0]]) / 2
    else:
        coef, icpt = clf.coef_, clf.intercept_
    for row, cls in enumerate(classes):
        weights[cls] = coef[row]
        bias[cls] = icpt[row]
    return weights, bias


def _calibrate(
    logits_dev: np.ndarray, y_dev: np.ndarray, unclear: int, blocked: np.ndarray, cfg: TrainConfig
) -> dict[str, Any]:
    temperature = fit_temperature(logits_dev, y_dev)
    probs = softmax(logits_dev, temperature)
    raw_pred = apply_threshold(probs, 0.0, unclear, blocked)
    out = choose_threshold(probs, y_dev, unclear, target=cfg.precision_target, blocked=blocked)
    out["temperature"] = temperature
    out["dev_macro_f1"] = round(macro_f1(y_dev.tolist(), raw_pred.tolist(), probs.shape[1]), 4)
    out["dev_accuracy"] = round(float((raw_pred == y_dev).mean()), 4)
    return out


def train_head(
    encoder: SentenceEncoder,
    names: Sequence[str],
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    progress: ProgressFn | None = None,
    stage: str = "head",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fit the head variant; returns ``(weights, bias, info)`` with C, temperature and threshold chosen on dev."""
    x_train = encoder.encode([ex.text for ex in train])
    x_dev = encoder.encode([ex.text for ex in dev])
    y_train, y_dev = _labels_of(train, names), _labels_of(dev, names)
    blocked = gate_blocked([ex.text for ex in dev])
    best: tuple[float, float, np.ndarray, np.ndarray] | None = None
    scores = {}
    for i, c in enumerate(cfg.c_grid):
        w, b = fit_logistic(x_train, y_train, len(names), c=c, seed=cfg.seed)
        pred = apply_threshold(x_dev @ w.T + b, 0.0, names.index(UNCLEAR), blocked)
        f1 = macro_f1(y_dev.tolist(), pred.tolist(), len(names))
        scores[str(c)] = round(f1, 4)
        if best is None or f1 > best[0] + 1e-9:
            best = (f1, c, w, b)
        if progress:
            progress(f"{stage}: choosing C on dev", i + 1, len(cfg.c_grid))
    assert best is not None
    _, c, w, b = best
    info = {"c": c, "dev_macro_f1_by_c": scores}
    info.update(_calibrate(x_dev @ w.T + b, y_dev, names.index(UNCLEAR), blocked, cfg))
    return w, b, info


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
    gold = torch.from_numpy(_labels_of(train, names))
    y = torch.cat([gold, torch.full((len(unlabelled),), -100, dtype=torch.long)])  # -100: no gold label
    y_dev = _labels_of(dev, names)
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
    info.update(_calibrate(x_dev @ w.T + b, y_dev, unclear, blocked, cfg))
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
    labels = _labels_of(train, names)
    if extra:  # e.g. the prompt's label descriptions and examples, as extra pair members
        texts += [ex.text for ex in extra]
        labels = np.concatenate([labels, _labels_of(extra, names)])
    train_states = enc.lower(texts)
    fit_states = train_states[: len(train)]
    dev_states = enc.lower([ex.text for ex in dev])
    y = torch.from_numpy(labels)
    y_train, y_dev = labels[: len(train)], _labels_of(dev, names)
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


def _rich_progress() -> tuple[ProgressFn, Callable[[], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
    )  # fmt: skip
    bar.start()
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        key = stage.split(":", 1)[0]
        if key not in tasks:
            tasks[key] = bar.add_task(stage, total=total)
        bar.update(tasks[key], completed=done, total=total, description=stage)

    return update, bar.stop


def truncated_encoder(base: SentenceEncoder, layers: int, folder: Path) -> SentenceEncoder:
    """The first ``layers`` transformer layers of ``base``'s model (embeddings included), saved to ``folder`` in
    ``save_pretrained`` format with its tokenizer, and loaded as a torch encoder for training."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(base.source, local_files_only=True)
    total = len(model.encoder.layer)
    if not 1 <= layers <= total:
        raise ValueError(f"small_layers must be between 1 and {total}, not {layers}")
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base.source, local_files_only=True).save_pretrained(folder)
    return SentenceEncoder(str(folder), max_length=base.max_length)


def unlabelled_texts(prompt: Prompt, held_out: Sequence[Example], root: Path = SPLITS_DIR) -> list[str]:
    """Texts for distillation without labels: the other prompts' committed train splits (replies on neighbouring
    questions), minus anything in ``held_out`` (this prompt's dev and test)."""
    held = {dedupe_key(ex.text) for ex in held_out}
    out: list[str] = []
    for path in sorted(root.glob("*/train.jsonl")):
        if path.parent.name == prompt.id:
            continue
        out += [ex.text for ex in load_jsonl(path) if dedupe_key(ex.text) not in held]
    return out


#: A teacher for distillation: its encoder, head weights and bias, and its calibrated softmax temperature.
Teacher = tuple[SentenceEncoder, np.ndarray, np.ndarray, float]


def teacher_logits(teachers: Sequence[Teacher], texts: Sequence[str]) -> np.ndarray:
    """The teachers' mean calibrated log-probabilities for ``texts`` (one teacher: its own, up to a constant)."""
    total = np.zeros((len(texts), teachers[0][1].shape[0]), dtype=np.float64)
    for encoder, weights, bias, temperature in teachers:
        total += np.log(np.clip(softmax(encoder.encode(texts) @ weights.T + bias, temperature), 1e-12, None))
    return np.asarray(total / len(teachers), dtype=np.float32)


def train_distilled(
    teachers: Sequence[Teacher],
    names: Sequence[str],
    train: Sequence[Example],
    dev: Sequence[Example],
    cfg: TrainConfig,
    folder: Path,
    *,
    unlabelled: Sequence[str] = (),
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Distil tuned teachers into a student made of the first teacher's first ``cfg.kd_layers`` layers.

    The student starts as the truncated teacher with a logistic head fitted on its embeddings; then all its layers
    and the head train on the teachers' mean calibrated log-probabilities (:func:`teacher_logits`) for ``train``
    and ``unlabelled`` plus the gold labels of ``train`` (:func:`train_finetuned` with a teacher), ``cfg.kd_epochs``
    epochs, best epoch on dev. Saves the student's encoder to ``folder/encoder``; returns ``(weights, bias, info)``.
    """
    texts = [ex.text for ex in train] + list(unlabelled)
    logits = teacher_logits(teachers, texts)
    start = folder / "student-start"
    small = truncated_encoder(teachers[0][0], cfg.kd_layers, start)
    w0, b0, _ = train_head(small, names, train, dev, cfg, progress, "distil: student head")
    student_cfg = replace(cfg, ft_layers=cfg.kd_layers, ft_epochs=cfg.kd_epochs)
    w, b, info = train_finetuned(
        names, train, dev, student_cfg, folder, base=str(start), init=(w0, b0), teacher=logits,
        unlabelled=unlabelled, progress=progress, stage="distil",
    )  # fmt: skip
    shutil.rmtree(start, ignore_errors=True)
    info["teachers"] = len(teachers)
    info["student_layers"] = cfg.kd_layers
    return w, b, info


#: ``auto`` keeps the distilled student unless another candidate beats it on dev by more than this: it classifies
#: about twice as fast as the six-layer models.
FAST_MARGIN = 0.01


def choose_variant(variant: str, dev_f1: dict[str, float]) -> str:
    """Which trained candidate a run keeps, from their dev macro-F1.

    ``distil`` keeps the student, and any other single variant keeps itself. ``auto`` keeps the best, except that
    the distilled student wins within :data:`FAST_MARGIN` of it and the head (which shares the bot's encoder) wins
    a tie with the fine-tune.
    """
    wanted = {"finetune": "finetuned", "distil": "distilled"}.get(variant, variant)
    if variant != "auto":
        return wanted if wanted in dev_f1 else "head"
    best = max(dev_f1.values())
    if "distilled" in dev_f1 and dev_f1["distilled"] >= best - FAST_MARGIN:
        return "distilled"
    return "head" if dev_f1["head"] >= best - 1e-9 else max(dev_f1, key=lambda name: dev_f1[name])


def train_prompt(
    prompt: Prompt,
    out_dir: Path,
    *,
    encoder: SentenceEncoder,
    data: Sequence[Example] | None = None,
    variant: str = "head",
    extra_files: Sequence[Path] = (),
    config: TrainConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a stance model for ``prompt`` and write it to ``out_dir``; returns its ``model.json`` metadata.

    ``data`` replaces the committed train split (``None``: use it); ``extra_files`` are JSONL files of labelled
    replies added to it. ``variant`` is ``head`` (seconds), ``finetune``, ``setfit`` or ``distil`` (minutes),
    ``small`` (seconds), or ``auto`` (head, fine-tune and distilled student; see :func:`choose_variant`). Everything
    is chosen on dev; test is only read to keep its texts out of the distillation's unlabelled texts.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    cfg = config or TrainConfig()
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    names = list(prompt.label_names)
    train, dev = training_data(prompt, data=data, extra_files=extra_files, seed=cfg.seed)
    missing = sorted(set(names) - {ex.label for ex in train})
    if missing:
        log.warning("Prompt %s: no training replies for %s; those labels are never predicted", prompt.id, missing)
    update, stop = _rich_progress() if progress else (None, lambda: None)
    started = time.perf_counter()
    stage = tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        t0 = time.perf_counter()
        w, b, info = train_head(encoder, names, train, dev, cfg, update)
        timings = {"head_seconds": round(time.perf_counter() - t0, 1)}
        kind, candidates = "head", {"head": info["dev_macro_f1"]}
        # each candidate trains in its own folder; the winner's encoder moves to ``tmp/encoder``
        tuned: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]] = {}
        if variant in ("finetune", "auto", "distil"):
            t0 = time.perf_counter()
            tuned["finetuned"] = train_finetuned(
                names, train, dev, cfg, tmp / "finetuned", init=(w, b), progress=update
            )
            timings["finetune_seconds"] = round(time.perf_counter() - t0, 1)
        if variant == "setfit":  # opt-in: minutes more, and no better than the fine-tune on dev (models/README.md)
            t0 = time.perf_counter()
            extra = fewshot_examples(prompt) if cfg.sf_label_texts else ()
            tuned["setfit"] = train_setfit(
                encoder, names, train, dev, cfg, tmp / "setfit", extra=extra, progress=update
            )
            timings["setfit_seconds"] = round(time.perf_counter() - t0, 1)
        if variant in ("distil", "auto"):  # the fine-tuned model(s) teach a student with fewer layers
            t0 = time.perf_counter()
            runs = [(tmp / "finetuned", tuned["finetuned"])]
            for k in range(1, cfg.kd_teachers):  # more fine-tunes with other seeds: an ensemble teaches better
                more = train_finetuned(
                    names, train, dev, replace(cfg, seed=cfg.seed + k), tmp / f"teacher-{k}", init=(w, b),
                    progress=update, stage=f"teacher {k + 1}",
                )  # fmt: skip
                runs.append((tmp / f"teacher-{k}", more))
            teachers: list[Teacher] = [
                (SentenceEncoder(str(where / ENCODER_DIR)), tw, tb, tinfo["temperature"])
                for where, (tw, tb, tinfo) in runs
            ]
            teacher_f1 = [tinfo["dev_macro_f1"] for _, (_, _, tinfo) in runs]
            unlabelled = unlabelled_texts(prompt, [*dev, *_test_split(prompt)])
            if len(unlabelled) > cfg.kd_unlabelled:
                unlabelled = random.Random(cfg.seed).sample(unlabelled, cfg.kd_unlabelled)
            tuned["distilled"] = train_distilled(
                teachers, names, train, dev, cfg, tmp / "distilled", unlabelled=unlabelled, progress=update
            )
            tuned["distilled"][2]["teacher_dev_macro_f1"] = teacher_f1[0] if len(teacher_f1) == 1 else teacher_f1
            for where, _ in runs[1:]:
                shutil.rmtree(where, ignore_errors=True)
            timings["distil_seconds"] = round(time.perf_counter() - t0, 1)
        if variant == "small":  # opt-in, not part of auto: it trades accuracy for speed
            t0 = time.perf_counter()
            small = truncated_encoder(encoder, cfg.small_layers, tmp / "small" / ENCODER_DIR)
            tuned["small"] = train_head(small, names, train, dev, cfg, update)
            timings["small_seconds"] = round(time.perf_counter() - t0, 1)
        candidates.update({name: result[2]["dev_macro_f1"] for name, result in tuned.items()})
        chosen = choose_variant(variant, candidates)
        if chosen != "head":
            kind, (w, b, info) = chosen, tuned[chosen]
            (tmp / kind / ENCODER_DIR).rename(tmp / ENCODER_DIR)
        for name in tuned:
            shutil.rmtree(tmp / name, ignore_errors=True)
    finally:
        stop()
    train_hash = data_hash([*train, *dev])
    encoder_name = {
        "head": encoder.name,
        "setfit": f"{encoder.name}-st",
        "small": f"{encoder.name}-L{cfg.small_layers}",
        "distilled": f"{encoder.name}-kd{cfg.kd_layers}",
    }.get(kind, f"{encoder.name}-ft")
    version = f"{kind}:{encoder_name}:{train_hash[:8]}:{prompt_fingerprint(prompt)}"
    meta: dict[str, Any] = {
        "prompt": prompt.id,
        "base_encoder": encoder.name,
        "variant_requested": variant,
        "candidates_dev_macro_f1": candidates,
        "data_hash": train_hash,
        "n_train": len(train),
        "n_dev": len(dev),
        "train_label_counts": {n: sum(1 for ex in train if ex.label == n) for n in names},
        "extra_files": [str(p) for p in extra_files],
        "config": asdict(cfg),
        "dev": {key: value for key, value in info.items() if key not in ("temperature", "threshold")},
        "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    model = HeadClassifier(
        encoder, names, w, b, threshold=float(info["threshold"]), temperature=float(info["temperature"]),
        version=version, kind=kind,
    )  # fmt: skip
    model.save(stage, meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    stage.rename(out_dir)
    log.info(
        "Prompt %s: trained %s model %s in %.1f s -> %s", prompt.id, kind, version, meta["seconds"]["total"], out_dir
    )
    return {**meta, "kind": kind, "version": version, "threshold": model.threshold, "temperature": model.temperature}
