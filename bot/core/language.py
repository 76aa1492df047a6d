"""Offline language check for replies: is this English, which the stance encoder reads, or not?

Two signals, no model and no download:

* **script**: replies written mostly in CJK (Japanese, Chinese, Korean) or other non-Latin scripts;
* **function words** for Latin-script text: the share of words that are common function words of German, French,
  Spanish, Italian, Portuguese, Dutch, Indonesian/Malay or Tagalog and *not* English words, against the share of
  English function words. A reply is flagged only when foreign function words clearly outnumber English ones, so
  English with a quoted foreign phrase, names ("Ishiba", "Japón") or slang stays English.

Measured on the labelled data: no English reply flagged (see models/README.md).
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple

from bot.core.text import script_profile

#: English function words and chat words. A token here never counts as foreign.
_ENGLISH_RAW = """
    a about above after again against all also am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down
    during each few for from further had hadn't has hasn't have haven't having he her here hers herself him
    himself his how i if in into is isn't it it's its itself just let me more most much must my myself no nor
    not now of off on once only or other our ours ourselves out over own same she should shouldn't so some
    such than that the their theirs them themselves then there these they this those through to too under
    until up very was wasn't we were weren't what when where which while who whom why will with won't would
    wouldn't you your yours yourself yourselves lol lmao yeah yes yep nope ok okay tbh imo idk fr bro like
    really still even already us yet ever never always get got make made think thing things way well back
    going go gonna wanna
"""
ENGLISH = frozenset(_ENGLISH_RAW.split())

#: Common function words per language, minus words that are also English (checked against :data:`ENGLISH`).
_FOREIGN_RAW: dict[str, str] = {
    "German": """
        der die das den dem des ein eine einen einem einer eines und oder aber nicht kein keine keinen ist sind war
        waren wird werden wurde hat haben hatte ich du er sie wir ihr es mit für auf aus bei nach von zu zum zur
        über unter auch noch schon nur sehr wie was wer wo warum weil dass wenn dann doch ja nein mehr viel beide
        sich man kann können muss müssen soll sollte hier genau gut jemand wann""",
    "French": """
        le la les un une des du de et ou mais ne pas plus est sont était être avoir ai as avons ont je tu il elle
        nous vous ils elles ce cette ces mon ton son notre votre leur pour par avec sans dans sur sous chez qui que
        quoi où pourquoi comment quand très aussi bien tout tous toute toutes ça oui""",
    "Spanish": """
        el la los las un una unos unas y o pero no es son era ser estar está están hay yo tú él ella nosotros
        ustedes ellos ellas mi tu su nuestro para por con sin en sobre entre que qué quien quién donde dónde
        porque cuando muy también todo todos toda todas más menos del al lo le les se ya sí alguien tiene
        mucho casi solo debería puede hace creo""",
    "Italian": """
        il lo la gli le un uno una e o ma è sono era essere avere ho hai ha abbiamo hanno io tu lui lei noi
        voi loro mio tuo suo nostro per con senza nel nella sul sulla che chi cosa dove perché quando molto anche
        tutto tutti più meno del della dei delle alla ai già sì questo questa quello quella""",
    "Portuguese": """
        o a os as um uma uns umas e ou mas não é são era ser estar está estão há eu tu ele ela nós vocês eles
        elas meu seu nosso para por com sem em no na nos nas sobre que quem onde porque quando muito também tudo
        todos mais menos do da dos das ao aos já sim isso isto aquilo""",
    "Dutch": """
        de het een en of maar niet geen is zijn was waren wordt worden heeft hebben ik jij je hij zij wij jullie
        mijn jouw zijn onze voor met zonder op uit bij naar van tot ook nog al alleen heel erg hoe wat wie waar
        waarom omdat dat als dan toch ja nee meer veel""",
    "Indonesian/Malay": """
        yang dan atau tetapi tidak bukan adalah ini itu saya aku kamu dia kami kita mereka untuk dengan tanpa di ke
        dari pada dalam juga sudah belum akan bisa harus sangat lebih kurang apa siapa mana kenapa karena kalau""",
    "Tagalog": """
        ang ng mga sa na ay at o pero hindi siya ako ikaw ka kami tayo sila ito iyan iyon para kung kasi lang
        naman talaga po opo dapat""",
    "Hindi (romanised)": """
        hai hain tha thi ka ki ke ko nahi nahin mujhe humko lagta yeh woh aur kya koi dono mein bhi toh yaar
        pata kuch sakta sakte chahiye hum tum aap kaise kyun kyunki lekin matlab accha theek""",
}
FOREIGN: dict[str, frozenset[str]] = {
    lang: frozenset(w for w in words.split() if w not in ENGLISH) for lang, words in _FOREIGN_RAW.items()
}

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_URL = re.compile(r"https?://\S+|<[@#:][^>]*>|@\w+|:\w+:")


def words(text: str) -> list[str]:
    """Lower-cased words (letters, with one inner apostrophe), URLs, mentions and ``:emoji:`` codes removed."""
    text = _URL.sub(" ", unicodedata.normalize("NFC", text).replace("\u2019", "'"))
    return [w.casefold() for w in _WORD.findall(text)]


def _accented(token: str) -> bool:
    """True for a word with a Latin letter outside ASCII (é, ñ, ß, ü...), rare in English words."""
    return any(ord(ch) > 127 and unicodedata.name(ch, "").startswith("LATIN") for ch in token)


def _foreign_hits(tokens: list[str]) -> tuple[str, int]:
    best, hits = "", 0
    for lang, vocab in FOREIGN.items():
        n = 0
        for tok in tokens:
            if tok in vocab or ("'" in tok and tok.split("'", 1)[1] in vocab):
                n += 1
        if n > hits:
            best, hits = lang, n
    return best, hits


#: ISO 639-1 codes of the languages the function-word check knows.
CODES: dict[str, str] = {
    "German": "de",
    "French": "fr",
    "Spanish": "es",
    "Italian": "it",
    "Portuguese": "pt",
    "Dutch": "nl",
    "Indonesian/Malay": "id",
    "Tagalog": "tl",
    "Hindi (romanised)": "hi",
}
#: The code of a reply whose language is not identified (a non-Latin script other than those below).
UNKNOWN = "und"
#: Unicode script names (the first word of a letter's name) and the language a reply mostly in that script is in.
#: Full-width Latin letters (``ｗｗｗ``) come from Japanese input methods.
_SCRIPT_LANGUAGES = {"CYRILLIC": "ru", "ARABIC": "ar", "THAI": "th", "HANGUL": "ko", "FULLWIDTH": "ja"}
_NAMES = {
    "ja": "Japanese",
    "zh": "Chinese",
    "ko": "Korean",
    "ru": "Russian (Cyrillic script)",
    "ar": "Arabic",
    "th": "Thai",
    UNKNOWN: "a non-Latin script",
}


class Language(NamedTuple):
    """A reply's language: an ISO 639-1 code (``und`` when unknown) and a name for people."""

    code: str
    name: str


def _cjk_language(text: str) -> str:
    """Japanese when the text has kana, Korean when it has more hangul than kana and ideographs, else Chinese."""
    kana = hangul = ideographs = 0
    for ch in text:
        name = unicodedata.name(ch, "")
        if name.startswith(("HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA")):
            kana += 1
        elif name.startswith("HANGUL"):
            hangul += 1
        elif name.startswith("CJK"):
            ideographs += 1
    if hangul > kana + ideographs:
        return "ko"
    return "ja" if kana else "zh"


def _script_language(text: str) -> str:
    """The language of the most common non-Latin, non-CJK script in ``text`` (``und`` when not one we name)."""
    counts: dict[str, int] = {}
    for ch in text:
        if unicodedata.category(ch).startswith("L"):
            script = unicodedata.name(ch, "").split(" ", 1)[0]
            counts[script] = counts.get(script, 0) + 1
    for script in sorted(counts, key=lambda s: -counts[s]):
        if script != "LATIN":
            return _SCRIPT_LANGUAGES.get(script, UNKNOWN)
    return UNKNOWN


def detect_language(text: str) -> Language | None:
    """The language ``text`` is written in when that is clearly not English, else ``None`` (English).

    Script first (CJK: Japanese when it has kana; other non-Latin scripts), then function words for Latin-script
    text. Short or ambiguous text is treated as English: a false "not English" would send a reply to a weaker
    model, or hide its stance.
    """
    profile = script_profile(text)
    letters = sum(profile.values())
    if letters == 0:
        return None
    if profile["cjk"] / letters > 0.3:
        code = _cjk_language(text)
        return Language(code, _NAMES[code])
    if profile["other"] / letters > 0.5:
        code = _script_language(text)
        return Language(code, _NAMES[code])
    tokens = words(text)
    if len(tokens) < 3:
        return None
    english = sum(1 for tok in tokens if tok in ENGLISH)
    lang, foreign = _foreign_hits([tok for tok in tokens if tok not in ENGLISH])
    if foreign:  # accented words back up function-word evidence, never stand alone
        foreign += sum(1 for tok in tokens if _accented(tok) and not any(tok in v for v in FOREIGN.values()))
    if foreign >= 2 and foreign >= 2 * english + 1 and foreign / len(tokens) >= 0.2:
        return Language(CODES[lang], lang)
    return None


def detect_non_english(text: str) -> str | None:
    """The name of the language ``text`` seems to be written in when that is clearly not English, else ``None``."""
    language = detect_language(text)
    if language is None:
        return None
    if language.code in ("ja", "zh", "ko") and script_profile(text)["cjk"]:
        return "CJK script (Japanese, Chinese or Korean)"
    if language.code in _NAMES and language.code not in ("ja", "zh", "ko"):
        return "a non-Latin script"
    return language.name
