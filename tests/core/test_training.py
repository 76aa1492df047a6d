"""Data, splits, training and evaluation of stance models (fast variants; the full recipe is in models/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.core import datasets
from bot.core.calibration import choose_threshold, fit_temperature
from bot.core.datasets import DataError, Example
from bot.core.distillation import teacher_logits
from bot.core.encoder import SentenceEncoder
from bot.core.evaluation import evaluate, expected_calibration_error
from bot.core.heads import TrainConfig
from bot.core.language import detect_non_english
from bot.core.prompts import UNCLEAR, Prompt, PromptCatalog
from bot.core.scoring import macro_f1
from bot.core.shipped import ModelLibrary
from bot.core.stance import GatedClassifier, SimilarityClassifier, softmax
from bot.core.trained import load_if_present, load_shipped, ship
from bot.core.training import choose_variant, train_prompt
from bot.core.training_data import realtrain_file, realtrain_files, training_data, unlabelled_texts

PROMPTS = ("alliance", "defense")
EVALUATE_KEYS = {
    "n", "accuracy", "macro_f1", "per_label", "confusion", "unclear_share", "ece", "subsets", "throughput", "model",
}  # fmt: skip


@pytest.mark.parametrize("prompt_id", PROMPTS)
def test_committed_splits_are_disjoint_stratified_and_hard_enough(catalog: PromptCatalog, prompt_id: str) -> None:
    prompt = catalog.get(prompt_id)
    parts = {name: datasets.load_split(prompt, name) for name in datasets.SPLITS}
    keys = {name: {datasets.dedupe_key(ex.text) for ex in rows} for name, rows in parts.items()}
    assert not keys["train"] & keys["test"] and not keys["dev"] & keys["test"] and not keys["train"] & keys["dev"]
    test = parts["test"]
    assert sum(1 for ex in test if set(ex.tags) & {"sarcasm", "negation"}) >= 40
    assert sum(1 for ex in test if "ja" in ex.tags) >= 3
    for label in prompt.label_names:  # every label in every split, roughly in proportion
        shares = [sum(ex.label == label for ex in rows) / len(rows) for rows in parts.values()]
        assert min(shares) > 0 and max(shares) - min(shares) < 0.1


def test_split_is_deterministic_and_keeps_near_duplicates_together() -> None:
    rows = [Example(f"reply number {i} about the alliance", ["a", "b"][i % 2], tags=("sarcasm",) if i % 3 else ())
            for i in range(100)]  # fmt: skip
    rows.append(Example("Reply number 1 about the ALLIANCE!", "b"))
    first = datasets.split_examples(rows, min_hard_test=10)
    again = datasets.split_examples(list(reversed(rows)), min_hard_test=10)
    assert {n: sorted(e.text for e in v) for n, v in first.items()} == {
        n: sorted(e.text for e in v) for n, v in again.items()
    }
    where = {ex.text: name for name, part in first.items() for ex in part}
    assert where["reply number 1 about the alliance"] == where["Reply number 1 about the ALLIANCE!"]
    assert sum(len(v) for v in first.values()) == len(rows)


def test_extending_splits_adds_new_rows_to_train_and_dev_only() -> None:
    old = [Example(f"old reply {i} on the alliance", ["a", "b"][i % 2]) for i in range(60)]
    splits = datasets.split_examples(old, min_hard_test=0)
    new = [Example(f"a new reply {i}, fresh", "ab"[i % 2], tags=("negation",) if i % 4 else ()) for i in range(50)]
    dupes = [Example(old[0].text.upper() + "!", "a"), Example(new[3].text, new[3].label)]  # both already seen
    out = datasets.extend_splits([*old, *new, *dupes], splits)
    assert out["test"] == splits["test"]  # test never changes
    added = {name: out[name][len(splits[name]) :] for name in ("train", "dev")}
    assert sorted(ex.text for rows in added.values() for ex in rows) == sorted(ex.text for ex in new)
    assert 5 <= len(added["dev"]) <= 15  # about 20% of the new rows
    assert datasets.extend_splits([*old, *new], out) == out  # nothing new: nothing changes


@pytest.mark.parametrize("prompt_id", PROMPTS)
def test_every_row_of_the_data_file_is_in_exactly_one_split(catalog: PromptCatalog, prompt_id: str) -> None:
    prompt = catalog.get(prompt_id)
    rows = datasets.load_jsonl(datasets.raw_data_path(prompt_id))
    parts = {name: datasets.load_split(prompt, name) for name in datasets.SPLITS}
    assert not datasets.new_rows(rows, parts)  # `stancebot train --split` has been run on the data file
    assert sorted(ex.text for ex in rows) == sorted(ex.text for part in parts.values() for ex in part)


def test_data_with_foreign_labels_is_rejected(catalog: PromptCatalog, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "hi", "label": "fair"}\n{"text": "yo", "label": "maybe"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="maybe"):
        datasets.for_prompt(datasets.load_jsonl(path), catalog.get("alliance"))
    path.write_text('{"text": "hi"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1"):
        datasets.load_jsonl(path)


@pytest.mark.parametrize("prompt_id", PROMPTS)
def test_language_check_never_flags_the_english_data(prompt_id: str) -> None:
    rows = datasets.load_jsonl(datasets.raw_data_path(prompt_id))
    english = [ex.text for ex in rows if not set(ex.tags) & set(datasets.FOREIGN_TAGS)]
    foreign = [ex.text for ex in rows if set(ex.tags) & set(datasets.FOREIGN_TAGS)]
    assert [t for t in english if detect_non_english(t)] == []
    assert sum(detect_non_english(t) is not None for t in foreign) >= 0.9 * len(foreign)


def test_metrics_helpers() -> None:
    assert macro_f1([0, 1, 1], [0, 1, 1], 2) == 1.0
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    assert expected_calibration_error([0.9, 0.9], [False, False]) == pytest.approx(0.9)
    logits = np.array([[4.0, 0.0], [4.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
    assert fit_temperature(logits, np.array([0, 1, 1, 0])) > 5  # half right: flatten
    probs = np.array([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8], [0.6, 0.4]])
    chosen = choose_threshold(probs, np.array([0, 1, 1, 0]), unclear=1, target=0.9)
    assert chosen["precision_target_met"] and chosen["dev_precision"] >= 0.9


@pytest.fixture(scope="module")
def small_models(
    tmp_path_factory: pytest.TempPathFactory, encoder: SentenceEncoder, catalog: PromptCatalog
) -> dict[str, Path]:
    """Head models trained on a small slice (30 replies per label) of each prompt's train split."""
    out = tmp_path_factory.mktemp("build")
    for prompt_id in PROMPTS:
        prompt = catalog.get(prompt_id)
        train = datasets.load_split(prompt, "train")
        slice_ = [ex for label in prompt.label_names for ex in [e for e in train if e.label == label][:30]]
        train_prompt(prompt, out / prompt_id, encoder=encoder, data=slice_, variant="head")
    return {pid: out / pid for pid in PROMPTS}


@pytest.mark.parametrize("prompt_id", PROMPTS)
def test_trained_head_beats_similarity_on_held_out_replies(
    small_models: dict[str, Path], encoder: SentenceEncoder, catalog: PromptCatalog, prompt_id: str
) -> None:
    prompt = catalog.get(prompt_id)
    held_out = datasets.load_split(prompt, "dev")
    trained = load_if_present(small_models[prompt_id], prompt, encoder)
    assert trained is not None and trained.version.startswith("head:")
    scores = {}
    for name, inner in (("trained", trained), ("similarity", SimilarityClassifier(prompt, encoder))):
        report = evaluate(GatedClassifier(inner), held_out, prompt.label_names, speed=False)
        scores[name] = report["without_threshold"]["macro_f1"]
    assert scores["trained"] >= scores["similarity"] + 0.05, scores


def test_evaluate_prints_the_similarity_baseline_beside_a_trained_model(
    small_models: dict[str, Path], tmp_path: Path, catalog: PromptCatalog
) -> None:
    data = tmp_path / "held-out.jsonl"
    datasets.save_jsonl(data, datasets.load_split(catalog.get("alliance"), "dev")[:80])
    args = ["evaluate", "--prompt", "alliance", "--data", str(data), "--model", str(small_models["alliance"])]
    result = CliRunner().invoke(main, [*args, "--no-speed"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    baseline = report["baseline"]
    assert report["model"].startswith("head:") and baseline["model"].startswith("similarity")
    assert baseline["macro_f1_gain"] == pytest.approx(report["macro_f1"] - baseline["macro_f1"], abs=1e-4)
    assert 0.0 <= baseline["accuracy"] <= 1.0 and baseline["macro_f1"] != report["macro_f1"]
    alone = CliRunner().invoke(main, [*args[:-1], "similarity", "--no-speed"])
    assert alone.exit_code == 0 and "baseline" not in json.loads(alone.stdout)
    assert json.loads(alone.stdout)["macro_f1"] == baseline["macro_f1"]


def test_model_folder_records_what_it_was_trained_on(small_models: dict[str, Path], catalog: PromptCatalog) -> None:
    meta = json.loads((small_models["alliance"] / "model.json").read_text(encoding="utf-8"))
    assert meta["labels"] == list(catalog.get("alliance").label_names)
    assert meta["kind"] == "head" and meta["prompt"] == "alliance"
    assert len(meta["data_hash"]) == 16 and meta["n_train"] == 120
    assert 0.0 <= meta["threshold"] < 1.0 and meta["temperature"] > 0
    assert {"dev_macro_f1", "dev_precision", "dev_coverage", "c"} <= set(meta["dev"])


def test_finetuned_variant_saves_and_loads_its_own_encoder(
    tmp_path: Path, encoder: SentenceEncoder, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("defense")
    train = datasets.load_split(prompt, "train")[:48]
    cfg = TrainConfig(ft_layers=1, ft_epochs=1, c_grid=(1.0,))
    meta = train_prompt(prompt, tmp_path / "defense", encoder=encoder, data=train, variant="finetune", config=cfg)
    assert meta["kind"] == "finetuned" and (tmp_path / "defense" / "encoder" / "config.json").is_file()
    model = load_if_present(tmp_path / "defense", prompt, encoder)
    assert model is not None and model.encoder is not encoder and model.version.startswith("finetuned:")
    (result,) = model.classify(["Japan should build more missiles."])
    assert result.label in prompt.label_names
    # `stancebot train` writes the bot-ready model (one int8 ONNX file with the head) beside the shipped layout
    shipped_root = tmp_path / "shipped"
    folder = ship(tmp_path / "defense", shipped_root, base_source=Path(encoder.source))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx"]
    library = ModelLibrary([shipped_root])
    library.verify()
    found = library.find("defense", prompt.label_names)
    assert found is not None
    bot_model = load_shipped(*found, encoder)
    assert bot_model.version == model.version and bot_model.encoder.backend == "onnx"
    assert bot_model.encoder.outputs == ("embedding", "logits")
    torch_probs, onnx_probs = model.probabilities(TEXTS_FOR_SHIP), bot_model.probabilities(TEXTS_FOR_SHIP)
    assert (torch_probs.argmax(axis=1) == onnx_probs.argmax(axis=1)).mean() >= 0.75  # int8: a close copy


TEXTS_FOR_SHIP = [
    "Japan should build more missiles.",
    "Sign a pact with India and Australia.",
    "Spend 2% of GDP on defense now.",
    "who wrote this?",
]


def per_label_slice(prompt: Prompt, n: int) -> list[Example]:
    """The first ``n`` replies of each label in the prompt's train split."""
    train = datasets.load_split(prompt, "train")
    return [ex for label in prompt.label_names for ex in [e for e in train if e.label == label][:n]]


def test_setfit_variant_tunes_saves_and_loads_its_own_encoder(
    tmp_path: Path, encoder: SentenceEncoder, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("defense")
    slice_ = per_label_slice(prompt, 20)
    cfg = TrainConfig(sf_layers=2, sf_epochs=2, sf_lr=1e-4, c_grid=(1.0,), sf_label_texts=True)
    meta = train_prompt(prompt, tmp_path / "defense", encoder=encoder, data=slice_, variant="setfit", config=cfg)
    assert meta["kind"] == "setfit" and (tmp_path / "defense" / "encoder" / "config.json").is_file()
    assert not (tmp_path / "defense" / "setfit").exists()
    assert len(meta["dev"]["dev_macro_f1_by_epoch"]) == 3 and meta["dev"]["extra_pair_texts"] == 15
    model = load_if_present(tmp_path / "defense", prompt, encoder)
    assert model is not None and model.kind == "setfit" and model.version.startswith("setfit:all-MiniLM-L6-v2-st:")
    assert model.encoder is not encoder
    texts = ["Japan should build more missiles.", "Japan and India should sign a defense pact.", "who wrote this?"]
    assert {r.label for r in model.classify(texts)} <= set(prompt.label_names)
    if meta["dev"]["best_epoch"]:  # the contrastive step moved the embeddings
        assert float((model.encoder.encode(texts) * encoder.encode(texts)).sum(1).min()) < 0.9999
    held_out = datasets.load_split(prompt, "dev")
    scores = {}
    for name, inner in (("setfit", model), ("similarity", SimilarityClassifier(prompt, encoder))):
        report = evaluate(GatedClassifier(inner), held_out, prompt.label_names, speed=False)
        scores[name] = report["without_threshold"]["macro_f1"]
    assert scores["setfit"] >= scores["similarity"] + 0.05, scores


def test_small_variant_keeps_the_first_layers_and_loads(
    tmp_path: Path, encoder: SentenceEncoder, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("alliance")
    cfg = TrainConfig(small_layers=2, c_grid=(1.0, 4.0))
    meta = train_prompt(prompt, tmp_path / "alliance", encoder=encoder, variant="small", config=cfg)
    config = json.loads((tmp_path / "alliance" / "encoder" / "config.json").read_text())
    assert meta["kind"] == "small" and config["num_hidden_layers"] == 2
    assert meta["version"].startswith("small:all-MiniLM-L6-v2-L2:")
    model = load_if_present(tmp_path / "alliance", prompt, encoder)
    assert model is not None and model.kind == "small" and model.encoder is not encoder
    report = evaluate(GatedClassifier(model), datasets.load_split(prompt, "dev"), prompt.label_names, speed=False)
    similarity = evaluate(
        GatedClassifier(SimilarityClassifier(prompt, encoder)), datasets.load_split(prompt, "dev"), prompt.label_names,
        speed=False,
    )  # fmt: skip
    assert report["without_threshold"]["macro_f1"] >= similarity["without_threshold"]["macro_f1"] + 0.05


def test_distilled_variant_learns_from_its_teacher_with_fewer_layers(
    tmp_path: Path, encoder: SentenceEncoder, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("defense")
    slice_ = per_label_slice(prompt, 60)
    cfg = TrainConfig(ft_layers=2, ft_epochs=3, kd_layers=2, kd_epochs=3, kd_unlabelled=150, c_grid=(1.0,))
    meta = train_prompt(prompt, tmp_path / "defense", encoder=encoder, data=slice_, variant="distil", config=cfg)
    config = json.loads((tmp_path / "defense" / "encoder" / "config.json").read_text())
    assert meta["kind"] == "distilled" and config["num_hidden_layers"] == 2
    assert meta["dev"]["unlabelled_texts"] == 150 and meta["dev"]["kd_alpha"] == cfg.kd_alpha
    assert {"head", "finetuned", "distilled"} == set(meta["candidates_dev_macro_f1"])
    assert meta["dev"]["teacher_dev_macro_f1"] == meta["candidates_dev_macro_f1"]["finetuned"]
    assert sorted(p.name for p in (tmp_path / "defense").iterdir()) == ["encoder", "head.npz", "model.json"]
    model = load_if_present(tmp_path / "defense", prompt, encoder)
    assert model is not None and model.kind == "distilled"
    assert model.version.startswith("distilled:all-MiniLM-L6-v2-kd2:")
    held_out = datasets.load_split(prompt, "dev")
    report = evaluate(GatedClassifier(model), held_out, prompt.label_names, speed=False)
    similarity = evaluate(GatedClassifier(SimilarityClassifier(prompt, encoder)), held_out, prompt.label_names,
                          speed=False)  # fmt: skip
    assert report["without_threshold"]["macro_f1"] >= similarity["without_threshold"]["macro_f1"] + 0.05


@pytest.mark.parametrize(
    ("variant", "scores", "kept"),
    [
        ("auto", {"head": 0.70, "finetuned": 0.80, "distilled": 0.795}, "distilled"),  # within the margin: faster
        ("auto", {"head": 0.70, "finetuned": 0.80, "distilled": 0.78}, "finetuned"),
        ("auto", {"head": 0.80, "finetuned": 0.80, "distilled": 0.70}, "head"),  # a tie: the shared encoder
        ("distil", {"head": 0.90, "finetuned": 0.80, "distilled": 0.70}, "distilled"),  # asked for the student
        ("finetune", {"head": 0.90, "finetuned": 0.80}, "finetuned"),
        ("head", {"head": 0.50}, "head"),
    ],
)
def test_choose_variant(variant: str, scores: dict[str, float], kept: str) -> None:
    assert choose_variant(variant, scores) == kept


def test_teacher_logits_average_the_teachers_calibrated_log_probabilities(encoder: SentenceEncoder) -> None:
    rng = np.random.default_rng(0)
    texts = ["Japan should pay more.", "Both sides gain.", "lol"]
    heads = [(rng.normal(size=(4, encoder.dim)), rng.normal(size=4), t) for t in (1.0, 2.5)]
    got = teacher_logits([(encoder, w, b, t) for w, b, t in heads], texts)
    emb = encoder.encode(texts)
    want = np.mean([np.log(softmax(emb @ w.T + b, t)) for w, b, t in heads], axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got.shape == (3, 4)


def test_unlabelled_texts_come_from_other_prompts_and_skip_held_out_ones(catalog: PromptCatalog) -> None:
    prompt = catalog.get("defense")
    other = datasets.load_split(catalog.get("alliance"), "train")
    texts = unlabelled_texts(prompt, other[:5])
    assert len(texts) == len(other) - 5 and other[5].text in texts and other[0].text not in texts


def test_evaluate_json_has_the_promised_keys(tmp_path: Path, catalog: PromptCatalog) -> None:
    data = tmp_path / "mine.jsonl"
    rows = datasets.load_split(catalog.get("alliance"), "test")[:12]
    rows.append(Example("日本はもっと負担すべき", "unfair", tags=("ja",)))
    datasets.save_jsonl(data, rows)
    result = CliRunner().invoke(
        main, ["evaluate", "--prompt", "alliance", "--data", str(data), "--model", "similarity", "--no-quantize"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= EVALUATE_KEYS
    assert report["n"] == 13 and report["prompt"] == "alliance"
    assert set(report["per_label"]) == set(catalog.get("alliance").label_names)
    assert {"precision", "recall", "f1"} <= set(report["per_label"][UNCLEAR])
    assert len(report["confusion"]["matrix"]) == 4
    assert {"sarcasm", "negation", "ja"} <= set(report["subsets"])
    assert report["subsets"]["ja"] == {"n": 1, "accuracy": 1.0}  # read by the multilingual head, not `unclear`
    throughput = report["throughput"]
    assert throughput["batched_replies_per_s"] > 0 and throughput["pipeline_replies_per_s"] > 0
    # the speeds are printed to 0.1 replies/s, the ratio from the unrounded speeds
    low = (throughput["batched_replies_per_s"] - 0.05) / (throughput["pipeline_replies_per_s"] + 0.05)
    high = (throughput["batched_replies_per_s"] + 0.05) / (throughput["pipeline_replies_per_s"] - 0.05)
    assert low - 0.01 <= throughput["ratio"] <= high + 0.01


def test_evaluate_says_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "nope"}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["evaluate", "--prompt", "alliance", "--data", str(bad), "--no-speed"])
    assert result.exit_code == 2 and "nope" in result.stderr


def test_temperature_and_threshold_are_fitted_on_real_statements(
    small_models: dict[str, Path], catalog: PromptCatalog
) -> None:
    meta = json.loads((small_models["alliance"] / "model.json").read_text(encoding="utf-8"))
    dev = meta["dev"]
    assert dev["calibrated_on"].startswith("real-dev")
    assert dev["n_real_dev"] == len(datasets.load_real(catalog.get("alliance"), "real-dev"))
    assert {"real_dev_macro_f1", "real_dev_macro_f1_at_threshold", "synthetic_dev_macro_f1_at_threshold"} <= set(dev)


def test_every_batch_of_real_paraphrases_is_read(catalog: PromptCatalog) -> None:
    for prompt_id in ("alliance", "defense"):
        prompt = catalog.get(prompt_id)
        files = realtrain_files(prompt)
        assert files[0] == realtrain_file(prompt)
        assert [p.name for p in files[1:]] == [f"{prompt_id}.more.jsonl", f"{prompt_id}.round3.jsonl"]
        for later in files[1:]:
            more = datasets.load_jsonl(later)
            assert more and {ex.label for ex in more} <= set(prompt.label_names)


def test_real_paraphrases_train_but_never_the_real_evaluation_statements(
    tmp_path: Path, catalog: PromptCatalog
) -> None:
    prompt = catalog.get("alliance")
    real_test = datasets.load_real(prompt, "real-test")
    planted = tmp_path / "extra.jsonl"
    fresh = datasets.Example("Both sides get plenty out of the bases, nobody is carrying anyone.", "mutual_benefit")
    datasets.save_jsonl(planted, [real_test[0], fresh])
    realtrain = realtrain_file(prompt)
    assert realtrain is not None
    base, _ = training_data(prompt)
    train, _ = training_data(prompt, extra_files=[realtrain, planted])
    added = {ex.text for ex in train} - {ex.text for ex in base}
    assert fresh.text in added and real_test[0].text not in added
    assert len(added) >= len(datasets.load_jsonl(realtrain)) - 5  # the paraphrases' pages are outside the real sets
