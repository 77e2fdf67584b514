"""Placeholder router, filled in by the tenants work."""

from fastapi import APIRouter

router = APIRouter()
