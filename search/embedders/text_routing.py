"""Which text tower reads a query: CLIP's own (English) or the paired multilingual one (the rest).

CLIP ViT-B/32's text tower was trained on English captions: it turns Vietnamese into noise. The
multilingual encoder (clip-ViT-B-32-multilingual-v1) was distilled into the same space from CLIP's
English embeddings and their translations, so it reads English too, only a little less well than the
tower it imitates. A query CLIP cannot read must therefore never reach CLIP; an English one sent to
the multilingual model merely loses a little. The rule leans that way:

1. A letter outside the Latin script (Cyrillic, Greek, CJK, Thai, Arabic, ...): multilingual.
2. A letter only Vietnamese uses among likely query languages (đ ă ơ ư, a vowel with a dot below or a
   hook above from Unicode's Latin Extended Additional block, ĩ ũ ỹ, and ã õ, which Portuguese shares:
   "São Paulo" goes to the multilingual model, which reads Portuguese too): multilingual.
3. Otherwise (ASCII, or accents Western languages share with Vietnamese, as in "café", "Pokémon",
   "Müller", "váy"): a language identifier choosing between English and Vietnamese only
   (py3langid, langid.py's naive Bayes over byte n-grams, its model shipped in the wheel; nothing is
   downloaded): Vietnamese with probability >= VIETNAMESE_MIN goes to the multilingual model, the rest
   to CLIP. It catches most Vietnamese typed without diacritics ("hinh tron mau do", "ao thun") and
   leaves English with a borrowed accented name to CLIP ("café au lait" 0.53, "Pokémon t-shirt" 0.12).
   It misses some ("giay the thao nam" 0.21, "vay dam nu" 0.29 go to CLIP).
   Two-way because a many-language identifier is unreliable on three-word queries ("blue jeans" came
   out Guarani); the product's second language is Vietnamese. Other Latin-script languages typed in
   ASCII (German "roter Kreis") mostly go to CLIP: a known limit.

Without py3langid installed, step 3 sends every Latin-script text to CLIP (logged once).
"""
from __future__ import annotations

import functools
import logging
import threading
import unicodedata
from typing import Any, Literal

log = logging.getLogger(__name__)

Tower = Literal["clip", "multilingual"]
CLIP: Tower = "clip"
MULTILINGUAL: Tower = "multilingual"

VIETNAMESE_MIN = 0.6  # P(Vietnamese | English or Vietnamese) from which a Latin-script query is Vietnamese

# Letters Vietnamese has and English-with-borrowed-names practically never does.
_VIETNAMESE_LETTERS = frozenset("đăơưĩũỹãõ")
_VIETNAMESE_BLOCK = range(0x1EA0, 0x1EFA)  # Latin Extended Additional: ạ ả ấ ầ ẩ ẫ ậ ắ ... ỵ ỷ ỹ
_COMBINING_VIETNAMESE = frozenset("\u0309\u0323\u031b\u0306")  # hook above, dot below, horn, breve

_lock = threading.Lock()


def is_latin(ch: str) -> bool:
    """Whether a letter belongs to the Latin script (ASCII letters and accented Latin letters)."""
    return ch.isascii() or unicodedata.name(ch, "").startswith("LATIN ")


def has_vietnamese_letters(text: str) -> bool:
    """Whether ``text`` has a letter or mark only Vietnamese (among likely query languages) uses."""
    for ch in unicodedata.normalize("NFC", text).lower():
        if ch in _VIETNAMESE_LETTERS or ord(ch) in _VIETNAMESE_BLOCK or ch in _COMBINING_VIETNAMESE:
            return True
    return False


def vietnamese_probability(text: str) -> float | None:
    """P(Vietnamese) against English for a Latin-script text; None where py3langid is not installed."""
    identifier = _identifier()
    if identifier is None:
        return None
    ranked = dict(identifier.rank(unicodedata.normalize("NFC", text).lower()))  # keeps no state per call
    return float(ranked.get("vi", 0.0))


def route(text: str) -> Tower:
    """The tower that should read ``text``: CLIP's own for English, the multilingual one otherwise."""
    if any(ch.isalpha() and not is_latin(ch) for ch in text):
        return MULTILINGUAL
    if has_vietnamese_letters(text):
        return MULTILINGUAL
    if not any(ch.isalpha() for ch in text):
        return CLIP  # digits, sizes, punctuation: nothing to read in any language
    probability = vietnamese_probability(text)
    if probability is not None and probability >= VIETNAMESE_MIN:
        return MULTILINGUAL
    return CLIP


def _identifier() -> Any:
    with _lock:  # one load even when the first queries arrive together
        return _load_identifier()


@functools.cache
def _load_identifier() -> Any:
    """py3langid's identifier narrowed to English and Vietnamese (loaded once, ~0.6 s, ~50-75 MB)."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        log.warning("py3langid is not installed: Vietnamese typed without diacritics goes to CLIP's text tower")
        return None
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(["en", "vi"])
    return identifier
