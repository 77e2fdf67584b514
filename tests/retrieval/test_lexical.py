"""BM25 and the hybrid score."""

import pytest

from services.retrieval.lexical import Bm25Index, fuse, stem, terms


def test_plurals_and_accents_meet_their_singular() -> None:
    assert [stem(w) for w in ("zapatillas", "devoluciones", "shoes", "dress", "envios")] == [
        "zapatilla",
        "devolucion",
        "shoe",
        "dress",
        "envio",
    ]
    assert terms("Las Devoluciones de ZAPATILLAS") == ["devolucion", "zapatilla"]


def _index() -> Bm25Index:
    index = Bm25Index()
    index.add("kobe", "Zapatilla Kobe 6 Protro verde de baloncesto")
    index.add("pegasus", "Zapatilla de running Pegasus negra")
    index.add("returns", "Devoluciones gratuitas de cualquier zapatilla en 30 días")
    return index


def test_rare_terms_outweigh_common_ones() -> None:
    ranked = [key for key, _ in _index().top("zapatilla kobe", 3)]
    assert ranked[0] == "kobe"
    assert set(ranked) == {"kobe", "pegasus", "returns"}


def test_updates_and_removals_are_reflected() -> None:
    index = _index()
    index.add("kobe", "Camiseta técnica")
    assert "kobe" not in index.scores("baloncesto")
    index.remove("pegasus")
    index.remove("missing")
    assert len(index) == 2
    assert index.scores("pegasus") == {}


def test_normalised_scores_reward_matching_the_whole_query() -> None:
    index = _index()
    whole = index.normalized_scores("kobe baloncesto")["kobe"]
    partial = index.normalized_scores("kobe tenis padel")["kobe"]
    assert 0 < partial < whole <= 1
    assert index.normalized_scores("quantum") == {}
    assert Bm25Index().normalized_scores("kobe") == {}


@pytest.mark.parametrize("cosine", [-0.2, 0.0, 0.3, 0.9])
def test_lexical_evidence_only_raises_the_cosine(cosine: float) -> None:
    assert fuse(cosine, 0.0) == pytest.approx(max(cosine, 0.0))
    assert fuse(cosine, 0.6) > max(cosine, 0.0)
    assert fuse(cosine, 1.0) <= 1.0
