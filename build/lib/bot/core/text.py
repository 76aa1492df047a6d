"""Reply text handling shared by the classifier and the renderers: normalising, checks, neutralising mentions."""

from __future__ import annotations

import re
import unicodedata

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_MASS_MENTION = re.compile(r"@(everyone|here)")
_WHITESPACE = re.compile(r"\s+")
_ZERO_WIDTH_SPACE = "\u200b"


def normalise_reply(text: str, *, max_chars: int = 2000) -> str:
    """Text as the model should see it: Discord markup replaced by words, whitespace collapsed, length capped."""
    text = _USER_MENTION.sub("@user", text)
    text = _ROLE_MENTION.sub("@role", text)
    text = _CHANNEL_MENTION.sub("#channel", text)
    text = _CUSTOM_EMOJI.sub(r":\1:", text)
    text = _WHITESPACE.sub(" ", text).strip()
    return text[:max_chars]


def has_words(text: str) -> bool:
    """True when the text holds at least one letter (any script); emoji, digits and punctuation alone do not."""
    return any(unicodedata.category(ch).startswith("L") for ch in text)


def script_profile(text: str) -> dict[str, int]:
    """Count letters per broad script: ``latin``, ``cjk`` (kana and CJK ideographs, hangul) and ``other``."""
    counts = {"latin": 0, "cjk": 0, "other": 0}
    for ch in text:
        if not unicodedata.category(ch).startswith("L"):
            continue
        name = unicodedata.name(ch, "")
        if name.startswith("LATIN"):
            counts["latin"] += 1
        elif name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "HALFWIDTH KATAKANA")):
            counts["cjk"] += 1
        else:
            counts["other"] += 1
    return counts


def neutralise_mentions(text: str) -> str:
    """Make quoted text unable to ping even if a renderer forgot ``allowed_mentions``.

    ``@everyone``/``@here`` get a zero-width space after the ``@``; user, role and channel mentions become
    plain names.
    """
    text = _MASS_MENTION.sub(lambda m: "@" + _ZERO_WIDTH_SPACE + m.group(1), text)
    text = _USER_MENTION.sub("@user", text)
    text = _ROLE_MENTION.sub("@role", text)
    return _CHANNEL_MENTION.sub("#channel", text)


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters, ending in an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"
