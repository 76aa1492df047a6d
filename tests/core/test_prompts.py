"""Prompts are data: the seed files load, a third prompt needs no code, bad definitions say what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.core.errors import PromptError, UnknownPromptError
from bot.core.prompts import UNCLEAR, PromptCatalog, prompt_from_dict


def _definition(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "id": "energy",
        "title": "Nuclear power?",
        "question": "Should Japan restart its nuclear plants?",
        "summary": "Japan weighs restarting reactors.",
        "labels": [
            {"name": "restart", "description": "Restart the plants.", "examples": ["Turn them back on."]},
            {"name": "phase_out", "description": "Close them for good.", "examples": ["Never again."]},
        ],
    }
    data.update(overrides)
    return data


def test_seed_prompts_load_with_their_labels(catalog: PromptCatalog) -> None:
    assert catalog.ids() == ["alliance", "defense"]
    assert catalog.get("alliance").label_names == ("unfair", "fair", "mutual_benefit", UNCLEAR)
    assert catalog.get("defense").label_names == ("increase_defense", "new_alliances", UNCLEAR)
    for prompt in catalog:
        assert prompt.question.endswith("?")
        assert all(label.examples for label in prompt.labels)


def test_a_third_prompt_is_just_a_file(tmp_path: Path) -> None:
    (tmp_path / "energy.toml").write_text(
        """
id = "energy"
title = "Nuclear power?"
question = "Should Japan restart its nuclear plants?"
summary = "Japan weighs restarting reactors."
[[labels]]
name = "restart"
description = "Restart the plants."
examples = ["Turn them back on."]
[[labels]]
name = "phase_out"
description = "Close them for good."
""",
        encoding="utf-8",
    )
    catalog = PromptCatalog.from_dir(tmp_path)
    assert catalog.get("energy").label_names == ("restart", "phase_out", UNCLEAR)


def test_unknown_prompt_lists_the_known_ones(catalog: PromptCatalog) -> None:
    with pytest.raises(UnknownPromptError, match=r"Unknown prompt 'nope'\. Known prompts: alliance, defense\."):
        catalog.get("nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"labels": [{"name": "", "description": "x"}, {"name": "b", "description": "y"}]}, "'name' is empty"),
        (
            {"labels": [{"name": f"label_{i}", "description": "d"} for i in range(11)]},
            "has 12 labels",
        ),
        (
            {"labels": [{"name": "same", "description": "a"}, {"name": "same", "description": "b"}]},
            "duplicate label names: same",
        ),
        ({"question": "x" * 5000}, "'question' is 5000 characters; the limit is 300"),
        ({"id": "Bad Id!"}, "must be 2-32 characters"),
        ({"labels": [{"name": "Yes!", "description": "d"}, {"name": "no", "description": "d"}]}, "label name"),
        ({"title": "   "}, "'title' is empty"),
    ],
)
def test_bad_definitions_say_what_is_wrong(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(PromptError, match=message):
        prompt_from_dict(_definition(**overrides))


def test_bad_toml_is_a_prompt_error(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("id = 'x\n", encoding="utf-8")
    with pytest.raises(PromptError, match=r"broken\.toml: not valid TOML"):
        PromptCatalog.from_dir(tmp_path)
