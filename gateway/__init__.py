"""The REST front door: FastAPI over the mesh's gRPC services."""
