"""Retrieval service: tenant knowledge, embeddings and tenant-scoped semantic search."""
