"""Text helpers for the extractors: a folded copy whose positions line up with the original."""

import functools
import unicodedata
from collections.abc import Iterable


def word_set(words: str) -> frozenset[str]:
    """A set of words written as one space-separated string (easier to read and edit)."""
    return frozenset(words.split())


def prepare(text: str) -> str:
    """The message with the characters that would break alignment spelled out: "42½" -> "42.5",
    typographic apostrophes and non-breaking spaces made plain."""
    return (
        text.replace("½", ".5").replace("\u2019", "'").replace("\u00a0", " ").replace("\u202f", " ")
    )


@functools.lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    decomposed = unicodedata.normalize("NFKD", char.lower())
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    return base[0] if base else char


@functools.lru_cache(maxsize=1024)
def fold_aligned(text: str) -> str:
    """Lower-case, accent-free copy of `text` with the same length, so a span found in the copy
    cuts the same characters out of the original: "Calle Álamo" -> "calle alamo"."""
    return "".join(map(_fold_char, text))


def blank(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """`text` with the given spans replaced by spaces (positions unchanged)."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def within_one_edit(a: str, b: str) -> bool:
    """True when `a` and `b` differ by at most one insertion, deletion or substitution (or one
    swap of neighbours): "kobee" ~ "kobe", "pegasu" ~ "pegasus", "kboe" ~ "kobe"."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]
