"""The offline embedder.

`HashingEmbedder` needs no model and no download: it hashes accent-folded words, word pairs and
character trigrams into a fixed number of signed buckets and L2-normalises the result. It
captures lexical overlap (shared words, shared word stems through trigrams), not meaning, so
its cosine scores run lower than a neural model's; its calibrated threshold says so.
"""

import asyncio
import hashlib
import itertools
import math
from collections.abc import Sequence

from services.mesh.text import content_words


class HashingEmbedder:
    """Feature-hashing embedder (offline, deterministic, CPU only)."""

    name = "offline-hashing-v1"
    default_threshold = 0.15

    def __init__(self, dimension: int = 512) -> None:
        self.dimension = dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_now, texts)

    def embed_now(self, texts: Sequence[str]) -> list[list[float]]:
        """The same vectors, computed on the calling thread."""
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
