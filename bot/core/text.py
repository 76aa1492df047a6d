"""Reply text handling in one place: the forms a reply's text takes (as stored, as the model reads it, as a
terminal shows it), checks, neutralising mentions.

* :func:`well_formed`: what any text file or database can hold (lone surrogates, e.g. from bytes decoded with
  ``surrogateescape``, become U+FFFD). Every stored reply is at least this.
* :func:`visible_text`: what Discord shows: C0/C1 control characters (NUL, ESC, BEL …) dropped, line breaks kept.
* :func:`storage_forms`: what to try storing, best first: the text as written, then the visible text (e.g.
  PostgreSQL cannot hold U+0000), then an ASCII form with escapes that any database holds.
* :func:`normalise_reply`: what the model reads: the visible text in NFKC with invisible characters (zero-width
  spaces and joiners, soft hyphens, bidi controls …) removed, so "un\\u200bfair" reads as "unfair".
* :func:`terminal_safe`: what a terminal may print: control characters and bidi controls shown as escapes.
"""

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

_SURROGATES = re.compile("[\ud800-\udfff]")
#: C0 and C1 control characters, DEL included; tab and line breaks are text.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x85]")
#: Characters that take no room and change nothing a reader sees (besides format characters, see below).
_INVISIBLE_EXTRA = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0")
#: Characters a terminal must not receive raw: controls (tab and line endings aside; a carriage return alone moves
#: the cursor back over the line), bidi controls, line separators, lone surrogates.
_TERMINAL_UNSAFE = re.compile(
    "\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def reply_text(value: object) -> str:
    """A reply's text from loosely typed input (JSON): a string as it is, ``None`` as an empty reply.

    Anything else raises :class:`TypeError`, so that a number or list never becomes text such as ``None``.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def well_formed(text: str) -> str:
    """``text`` with lone surrogates (which no UTF-8 file or database can hold) replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", text)


def visible_text(text: str) -> str:
    """``text`` as Discord shows it: well formed, control characters dropped, every line break as ``\\n``."""
    return _CONTROLS.sub("", _LINE_BREAKS.sub("\n", well_formed(text)))


def ascii_text(text: str) -> str:
    """The visible text in ASCII, every other character as a Python escape (``\\u65e5``): any database holds it."""
    return visible_text(text).encode("ascii", "backslashreplace").decode("ascii")


def storage_forms(text: str) -> list[str]:
    """The forms of a reply's text to try storing, best first (each differs from the one before)."""
    forms: list[str] = []
    for form in (well_formed(text), visible_text(text), ascii_text(text)):
        if form not in forms:
            forms.append(form)
    return forms


def _visible_to_model(ch: str) -> bool:
    return unicodedata.category(ch) != "Cf" and ch not in _INVISIBLE_EXTRA


def model_text(text: str) -> str:
    """The visible text in NFKC (full-width and compatibility letters as plain ones) without invisible characters."""
    text = unicodedata.normalize("NFKC", visible_text(text))
    return "".join(ch for ch in text if _visible_to_model(ch))


def terminal_safe(text: str) -> str:
    """``text`` fit for a terminal: control characters (tab and line endings aside), bidi controls and lone surrogates
    as visible escapes (``\\x1b``, ``\\u202e``), so a reply can neither move the cursor nor reorder a line."""
    return _TERMINAL_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


def normalise_reply(text: str, *, max_chars: int = 2000) -> str:
    """Text as the model should see it (:func:`model_text`): Discord markup replaced by words, whitespace
    collapsed, length capped."""
    text = _USER_MENTION.sub("@user", model_text(text))
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
