"""Words as the keyword channel reads them, Vietnamese first: one form for matching with and without accents.

Text is put in Unicode NFC first, so a Vietnamese syllable ("phở", whose tone mark a decomposed form keeps
apart) is one token; tokens are runs of letters and digits (underscores, hyphens, dots and slashes split
file names and paths: "hoa-dao_tet.2024" is four words). ``fold`` removes tone and vowel marks and maps
đ to d, so "pho bo" typed without diacritics meets "phở bò"; the exact form is kept beside it so that a
query typed with its diacritics ranks the images that carry them higher.
"""
from __future__ import annotations

import functools
import re
import unicodedata

_TOKEN = re.compile(r"[^\W_]+")
# Function words that every caption holds; a word is kept whenever it carries meaning in either language
# (Vietnamese "cua", crab, is not "của", of: stop words are matched in their exact form).
STOP_WORDS = frozenset((
    "a", "an", "the", "of", "and", "or", "in", "on", "at", "to", "for", "with", "by", "from", "is", "are", "was",
    "were", "be", "this", "that", "these", "those", "it", "its", "as", "into", "photo", "picture", "image",
    "một", "những", "các", "của", "và", "là", "có", "cho", "với", "trong", "trên", "dưới", "này", "đó", "được",
    "bức", "tấm", "ảnh", "hình",
))


def normal(text: str) -> str:
    """``text`` in NFC, lower-cased (casefold), whitespace as one space."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


@functools.lru_cache(maxsize=65_536)  # called word by word on every hit's fields: the same words recur
def fold(text: str) -> str:
    """``text`` without accents (tone and vowel marks gone, đ as d), lower-cased: the form both sides meet in."""
    decomposed = unicodedata.normalize("NFD", normal(text).replace("đ", "d"))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def tokens(text: str) -> list[str]:
    """The words of ``text`` in their exact form (NFC, lower-cased), in order."""
    return _TOKEN.findall(normal(text))


def query_words(text: str) -> list[str]:
    """The words of a query worth matching: ``tokens`` without stop words, each once, in order."""
    return list(dict.fromkeys(t for t in tokens(text) if t not in STOP_WORDS))


def found(text: str, words: list[str]) -> list[str]:
    """The words of ``text``, as written there, that match one of ``words`` with or without accents; each once."""
    wanted = {fold(w) for w in words}
    return list(dict.fromkeys(w for w in _TOKEN.findall(unicodedata.normalize("NFC", text)) if fold(w) in wanted))
