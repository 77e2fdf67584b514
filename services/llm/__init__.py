"""LLM service: model calls with structured actions; the offline responder is its default."""
