"""Splitting documents into overlapping chunks with stable ids.

HTML is reduced to its visible text (scripts and styles dropped); Markdown keeps its headings
as paragraph starts. Paragraphs are packed into windows of about CHUNK_CHARS characters; each
window repeats the end of the previous one (OVERLAP_CHARS) so that an answer straddling a
boundary is found whole. The same text always yields the same chunks, so chunk ids
(`<docId>#<n>`) are stable and re-ingesting unchanged content re-embeds nothing.
"""

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

CHUNK_CHARS = 800
OVERLAP_CHARS = 120
BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "li",
        "ul",
        "ol",
        "br",
        "tr",
        "table",
        "pre",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
    }
)
SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
MARKDOWN_HEADING = re.compile(r"^(#{1,6})\s+", re.MULTILINE)


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED_TAGS:
            self._skipping += 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        elif tag in BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def visible_text(markup: str) -> str:
    """The text a reader sees in an HTML document."""
    parser = _VisibleText()
    parser.feed(markup)
    parser.close()
    return html.unescape("".join(parser.parts))


def paragraphs(text: str, media_type: str) -> list[str]:
    """The document's paragraphs, whitespace-normalised, in order."""
    if media_type == "text/html":
        text = visible_text(text)
    elif media_type == "text/markdown":
        text = MARKDOWN_HEADING.sub(lambda m: "\n\n", text)
    blocks = (" ".join(block.split()) for block in PARAGRAPH_BREAK.split(text))
    return [block for block in blocks if block]


def chunk(text: str, media_type: str = "text/plain") -> list[Chunk]:
    """Overlapping windows of whole paragraphs (a paragraph longer than a window is cut)."""
    pieces: list[str] = []
    for paragraph in paragraphs(text, media_type):
        while len(paragraph) > CHUNK_CHARS:
            cut = paragraph.rfind(" ", 0, CHUNK_CHARS)
            cut = cut if cut > CHUNK_CHARS // 2 else CHUNK_CHARS
            pieces.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    windows: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > CHUNK_CHARS:
            windows.append(current)
            tail = current[-OVERLAP_CHARS:]
            tail = tail[tail.find(" ") + 1 :] if " " in tail else tail
            current = f"{tail} {piece}"
        else:
            current = f"{current} {piece}".strip()
    if current:
        windows.append(current)
    return [Chunk(index, window) for index, window in enumerate(windows)]
