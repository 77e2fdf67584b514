"""Orchestrator: the turn — context, retrieval, LLM, actions, persist, answer."""
