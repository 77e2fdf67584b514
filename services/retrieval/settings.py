"""Retrieval service settings."""

from pathlib import Path

from pydantic import Field

from services.mesh.settings import MeshSettings


class RetrievalSettings(MeshSettings):
    default_top_k: int = Field(5, ge=1, le=50, validation_alias="RETRIEVAL_TOP_K")
    max_top_k: int = Field(50, ge=1, validation_alias="RETRIEVAL_MAX_TOP_K")
    seed_demo: bool = Field(True, validation_alias="RETRIEVAL_SEED_DEMO")
    index_dir: Path | None = Field(None, validation_alias="RETRIEVAL_INDEX_DIR")
    """Where the embedded vector index keeps its partitions (default `<state dir>/vectors`)."""

    def resolved_index_dir(self) -> Path:
        return self.index_dir or self.state_dir / "vectors"
