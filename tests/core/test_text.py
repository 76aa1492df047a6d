"""Reply text in its forms: as stored, as the model reads it (the shipped model), as a terminal shows it."""

from __future__ import annotations

import pytest

from bot.config import load_settings, model_registry
from bot.core.prompts import PromptCatalog
from bot.core.stance import StanceClassifier
from bot.core.text import (
    ascii_text,
    normalise_reply,
    reply_text,
    storage_forms,
    terminal_safe,
    visible_text,
    well_formed,
)


def test_stored_forms_keep_the_text_as_written_first_then_what_any_database_holds() -> None:
    raw = "un\x00fair\x1b[31m \ud800 日本\r\nok"
    assert well_formed(raw) == "un\x00fair\x1b[31m \ufffd 日本\r\nok"
    assert visible_text(raw) == "unfair[31m \ufffd 日本\nok"
    assert ascii_text(raw) == "unfair[31m \\ufffd \\u65e5\\u672c\nok"
    assert storage_forms(raw) == [well_formed(raw), visible_text(raw), ascii_text(raw)]
    assert storage_forms("plain") == ["plain"]
    assert visible_text("a\x0bb\x0cc\x85d\re") == "a\nb\nc\nd\ne"  # line breaks stay line breaks


def test_the_model_reads_nfkc_without_invisible_characters() -> None:
    for disguised in [
        "un\u200bfair",
        "un\u200cfair",
        "un\u200dfair",
        "un\u2060fair",
        "\ufeffunfair",
        "un\u00adfair",
        "un\u202efair",
        "un\U000e0041fair",
        "un\u034ffair",
        "un\x00fair",
        "ｕｎｆａｉｒ",
    ]:
        assert normalise_reply(disguised) == "unfair", ascii(disguised)
    assert normalise_reply("  <@123>  says\tfair ") == "@user says fair"


def test_terminal_output_shows_control_characters_as_escapes() -> None:
    shown = terminal_safe("a\x1b[2Jb\x00c\x07\x9b\u202eevil\u2066\rd\ud800\te\nf")
    assert shown == "a\\x1b[2Jb\\x00c\\x07\\x9b\\u202eevil\\u2066\\rd\\ud800\te\nf"
    assert terminal_safe("Japan 日本 🇯🇵 fair\r\n") == "Japan 日本 🇯🇵 fair\r\n"


def test_null_text_is_empty_never_the_word_none() -> None:
    assert reply_text(None) == ""
    assert reply_text("x") == "x"
    for bad in (5, ["x"], {"a": 1}, 1.5, True):
        with pytest.raises(TypeError):
            reply_text(bad)


@pytest.fixture(scope="module")
def shipped(catalog: PromptCatalog) -> StanceClassifier:
    """The shipped alliance model behind the gate, as the bot runs it."""
    return model_registry(load_settings(None, environ={})).classifier(catalog.get("alliance"))


def test_invisible_and_full_width_characters_do_not_change_the_shipped_models_stance(
    shipped: StanceClassifier,
) -> None:
    plain = [
        "It is unfair to us",
        "unfair deal for America",
        "Japan should pay more",
        "Japan already pays billions for the bases, it's fair",
    ]
    disguised = [
        "It is un\u200bfair to us",
        "ｕｎｆａｉｒ deal for America",
        "Ｊａｐａｎ ｓｈｏｕｌｄ ｐａｙ ｍｏｒｅ",
        "Japan al\u00adready pays bil\u2060lions for the ba\u200dses, it's \ufefffair\x00",
    ]
    inner = shipped.inner  # type: ignore[attr-defined]
    assert inner.classify(disguised)[:2] != inner.classify(plain)[:2]  # read as written, the disguise works
    expected = shipped.classify(plain)
    assert expected[2].label == "unfair" and expected[3].label == "fair"
    assert shipped.classify(disguised) == expected
