"""Placeholder router, filled in by the handoff work."""

from fastapi import APIRouter

router = APIRouter()
