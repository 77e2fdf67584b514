"""Versioned schema migrations of the context store, one folder per dialect."""
