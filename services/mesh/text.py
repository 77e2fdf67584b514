"""Text normalisation shared by the offline engines (embedder, offline responder)."""

import re
import unicodedata

WORD = re.compile(r"[a-z0-9]+")
STOPWORDS = frozenset(
    [
        "a",
        "al",
        "algo",
        "como",
        "con",
        "de",
        "del",
        "el",
        "en",
        "es",
        "esta",
        "este",
        "hay",
        "la",
        "las",
        "lo",
        "los",
        "me",
        "mi",
        "mis",
        "no",
        "o",
        "para",
        "por",
        "que",
        "se",
        "si",
        "su",
        "sus",
        "te",
        "tu",
        "un",
        "una",
        "uno",
        "y",
        "ya",
        "yo",
        "an",
        "and",
        "are",
        "at",
        "be",
        "do",
        "for",
        "from",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "was",
        "what",
        "with",
        "you",
        "your",
    ]
)


def fold(text: str) -> str:
    """Lower-case, accent-free text: 'Información' -> 'informacion'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The folded words of `text`, stop words included."""
    return WORD.findall(fold(text))


def content_words(text: str) -> list[str]:
    """The folded words of `text` without Spanish and English stop words."""
    return [word for word in words(text) if word not in STOPWORDS]
