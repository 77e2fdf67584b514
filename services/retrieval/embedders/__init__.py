"""The embedder port: text in, L2-normalised vectors of a fixed dimension out."""

from collections.abc import Sequence
from typing import Protocol


class Embedder(Protocol):
    name: str
    """Stable name of the model; scores are comparable only within one name."""
    dimension: int
    default_threshold: float
    """The cosine threshold calibrated for this embedder (README: Retrieval quality)."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. CPU-bound adapters do their work off the event loop;
        remote ones raise MeshError UNAVAILABLE when the provider cannot be reached."""
        ...
