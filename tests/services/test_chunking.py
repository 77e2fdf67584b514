"""Chunking: visible text only, overlapping windows, the same chunks for the same text."""

import itertools

from services.retrieval.chunking import CHUNK_CHARS, OVERLAP_CHARS, chunk, paragraphs

LONG = "\n\n".join(
    f"Párrafo {n}: " + " ".join(f"palabra{n}_{w}" for w in range(40)) for n in range(12)
)


def test_html_keeps_visible_text_and_drops_scripts() -> None:
    page = (
        "<html><head><style>p{color:red}</style><script>alert('x')</script></head>"
        "<body><h1>Envíos</h1><p>Gratis desde 50&nbsp;EUR.</p><p>2-4 días.</p></body></html>"
    )
    assert paragraphs(page, "text/html") == ["Envíos", "Gratis desde 50 EUR.", "2-4 días."]


def test_markdown_headings_start_paragraphs() -> None:
    text = "# Devoluciones\nTienes 30 días.\n## Reembolso\nEn 5 días."
    assert paragraphs(text, "text/markdown") == [
        "Devoluciones Tienes 30 días.",
        "Reembolso En 5 días.",
    ]


def test_long_text_becomes_overlapping_windows_that_cover_everything() -> None:
    chunks = chunk(LONG)
    assert len(chunks) > 3
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(len(c.text) <= CHUNK_CHARS + OVERLAP_CHARS for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert before.text[-40:].split()[-1] in after.text, "consecutive windows overlap"
    words = {w for c in chunks for w in c.text.split()}
    assert {f"palabra{n}_{w}" for n in range(12) for w in range(40)} <= words


def test_the_same_text_gives_the_same_chunks() -> None:
    assert chunk(LONG) == chunk(LONG)
    assert chunk("  \n\n  ") == []
    assert chunk("una frase corta") == [chunk("una frase corta")[0]]


def test_a_paragraph_longer_than_a_window_is_cut_at_a_space() -> None:
    giant = " ".join(["segmento"] * 400)
    chunks = chunk(giant)
    assert len(chunks) >= 4
    assert all(not c.text.startswith("egmento") for c in chunks)
