"""The embedder port and the offline embedder.

`HashingEmbedder` needs no model and no download: it hashes accent-folded words, word pairs and
character trigrams into a fixed number of signed buckets and L2-normalises the result. It
captures lexical overlap (shared words, shared word stems through trigrams), not meaning, so
its cosine scores run lower than a neural model's; its calibrated threshold says so.
"""

import hashlib
import itertools
import math
from typing import Protocol

from services.mesh.text import content_words


class Embedder(Protocol):
    name: str
    dimension: int
    default_threshold: float
    """The cosine threshold calibrated for this embedder (see the module docstring)."""

    def embed(self, texts: list[str]) -> list[list[float]]: ...


class HashingEmbedder:
    """Feature-hashing embedder (offline, deterministic, CPU only)."""

    name = "offline-hashing-v1"
    default_threshold = 0.15

    def __init__(self, dimension: int = 512) -> None:
        self.dimension = dimension

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._embed_one(text) for text in texts]

    def _embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimension
        tokens = content_words(text)
        features = [*tokens, *(f"{a} {b}" for a, b in itertools.pairwise(tokens))]
        for token in tokens:
            padded = f"#{token}#"
            features.extend(padded[i : i + 3] for i in range(len(padded) - 2))
        for feature in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimension
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine of two L2-normalised vectors."""
    return sum(x * y for x, y in zip(a, b, strict=True))
