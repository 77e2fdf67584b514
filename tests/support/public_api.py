"""The gateway app over the in-process mesh, driven through httpx (a pytest plugin).

`public_api` gives an httpx client on the real gateway app, whose gRPC clients reach the
in-process context, retrieval, LLM and orchestrator services over mTLS, plus a token maker."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.settings import GatewaySettings
from tests.support.inprocess_mesh import InProcessMesh

JWT_SECRET = "public-api-" + "k" * 40


def gateway_settings(mesh: InProcessMesh, **overrides: Any) -> GatewaySettings:
    """The gateway's settings for `mesh`: its state directory and addresses, `JWT_SECRET`."""
    return GatewaySettings(
        **{
            "state_dir": mesh.settings.state_dir,
            "context_addr": mesh.settings.context_addr,
            "retrieval_addr": mesh.settings.retrieval_addr,
            "llm_addr": mesh.settings.llm_addr,
            "orchestrator_addr": mesh.settings.orchestrator_addr,
            "jwt_secret": JWT_SECRET,
            **overrides,
        }
    )


def bearer_headers(
    settings: GatewaySettings, *, tenant: str, role: str, subject: str, ttl: int
) -> dict[str, str]:
    """An `Authorization` header with a token the gateway of `settings` accepts."""
    token = issue_token(settings, tenant_id=tenant, role=role, subject=subject, ttl=ttl)
    return {"Authorization": f"Bearer {token}"}


@dataclass
class PublicApi:
    client: httpx.AsyncClient
    app: FastAPI
    settings: GatewaySettings

    def headers(
        self, tenant: str = "demo", role: str = "user", subject: str = "user-7"
    ) -> dict[str, str]:
        return bearer_headers(self.settings, tenant=tenant, role=role, subject=subject, ttl=600)


@asynccontextmanager
async def public_api_over(mesh: InProcessMesh, **overrides: Any) -> AsyncIterator[PublicApi]:
    settings = gateway_settings(mesh, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", timeout=30
        ) as client:
            yield PublicApi(client, app, settings)


@pytest.fixture
async def public_api(mesh: InProcessMesh) -> AsyncIterator[PublicApi]:
    async with public_api_over(mesh) as api:
        yield api
