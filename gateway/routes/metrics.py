"""`/metrics`: the gateway's Prometheus registry (the same process-wide registry the mesh's
interceptors and outbound channels count into). Kept off the OpenAPI; when
`GATEWAY_METRICS_TOKEN` is set the scraper must present it as a Bearer token."""

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway.auth import AuthError
from gateway.settings import GatewaySettings

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    settings: GatewaySettings = request.app.state.settings
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise AuthError(401, "Unauthorized", "the metrics endpoint needs its scrape token")
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
