"""The shape of the gateway's OpenAPI document: request bodies by reference to named component
schemas (no inline `$defs`), no 422 (validation failures are 400 problems), and every error
response documented as an RFC 9457 problem; and the titles those problems carry."""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Query

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.problems import PROBLEM_JSON, install_handlers, title_of
from gateway.settings import GatewaySettings

PROCESS = "/v2/agents/meta-agent/process"
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def settings(tmp_path: Path) -> GatewaySettings:
    return GatewaySettings(state_dir=tmp_path, jwt_secret="k" * 40)


@pytest.fixture
def document(settings: GatewaySettings) -> dict[str, Any]:
    return create_app(settings).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def test_the_process_body_is_a_reference_to_named_components(document: dict[str, Any]) -> None:
    body = document["paths"][PROCESS]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/ProcessRequest"}}
    }
    schemas = document["components"]["schemas"]
    request = schemas["ProcessRequest"]
    assert request["properties"]["input"] == {"$ref": "#/components/schemas/ProcessInput"}
    assert request["properties"]["channel"] == {"$ref": "#/components/schemas/Channel"}
    assert set(request["required"]) == {"tenantId", "sessionId", "channel", "input"}
    input_type = schemas["ProcessInput"]["properties"]["type"]
    assert input_type["$ref"] == "#/components/schemas/InputType"
    assert "event" in input_type["description"]
    assert schemas["Channel"]["enum"] == ["web", "whatsapp", "voice", "instagram"]


def test_no_schema_is_inline_with_defs_and_every_reference_resolves(
    document: dict[str, Any],
) -> None:
    text = json.dumps(document)
    assert "$defs" not in text
    references = set(re.findall(r'"\$ref": "([^"]+)"', text))
    assert references
    prefix = "#/components/schemas/"
    assert all(ref.startswith(prefix) for ref in references), references
    missing = {
        ref
        for ref in references
        if ref.removeprefix(prefix) not in document["components"]["schemas"]
    }
    assert not missing


def test_no_422_is_documented(document: dict[str, Any]) -> None:
    documented = [name for name, op in operations(document) if "422" in op["responses"]]
    assert documented == []
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(document["components"]["schemas"])


def test_the_400_problem_is_documented_wherever_validation_can_fail(
    document: dict[str, Any],
) -> None:
    validated = [
        name for name, op in operations(document) if op.get("parameters") or op.get("requestBody")
    ]
    assert PROCESS in " ".join(validated) and len(validated) > 5
    for name, op in operations(document):
        if name in validated:
            assert op["responses"].get("400", {}).get("content") == PROBLEM_CONTENT, name


def test_every_documented_error_is_a_problem(document: dict[str, Any]) -> None:
    errors = [
        (name, status, response)
        for name, op in operations(document)
        for status, response in op["responses"].items()
        if status[0] in "45"
    ]
    assert len(errors) > 50
    for name, status, response in errors:
        assert response["content"] == PROBLEM_CONTENT, (name, status)
        assert response["description"] == f"{title_of(int(status))}: an RFC 9457 problem"
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail"} <= problem["properties"].keys()


def test_a_route_with_no_documented_problem_gets_the_400_instead_of_the_422() -> None:
    app = FastAPI()
    install_handlers(app)

    @app.get("/items/{item}")
    async def item(item: int, q: Annotated[str, Query(min_length=2)]) -> dict[str, str]:
        return {}

    document = app.openapi()
    responses = document["paths"]["/items/{item}"]["get"]["responses"]
    assert set(responses) == {"200", "400"}
    assert responses["400"] == {
        "description": "Bad Request: an RFC 9457 problem",
        "content": PROBLEM_CONTENT,
    }
    assert set(document["components"]["schemas"]) == {"Problem", "FieldError"}


def test_the_document_is_made_once(settings: GatewaySettings) -> None:
    app = create_app(settings)
    assert app.openapi() is app.openapi()


@pytest.mark.parametrize(
    ("status", "title"),
    [
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (415, "Unsupported Media Type"),
        (418, "I'm a Teapot"),
        (499, "Error"),
    ],
)
async def test_an_http_error_is_a_problem_titled_by_its_status(status: int, title: str) -> None:
    app = FastAPI()
    install_handlers(app)

    @app.get("/fail")
    async def fail() -> None:
        raise HTTPException(status, "it failed")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        reply = await client.get("/fail")
    assert reply.status_code == status
    assert reply.headers["content-type"] == PROBLEM_JSON
    assert reply.json()["title"] == title and reply.json()["detail"] == "it failed"


async def _post(settings: GatewaySettings, path: str, role: str, **request: Any) -> httpx.Response:
    """One request to the app, with no mesh behind it (refused before any call is made)."""
    app = create_app(settings)
    token = issue_token(settings, tenant_id="demo", role=role, subject="u-1", ttl=60)
    headers = {"Authorization": f"Bearer {token}", **request.pop("headers", {})}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client,
    ):
        return await client.post(path, headers=headers, **request)


async def test_a_catalogue_of_another_media_type_is_an_unsupported_media_type_problem(
    settings: GatewaySettings,
) -> None:
    reply = await _post(
        settings,
        "/v2/tenants/demo/knowledge",
        "tenant-admin",
        headers={"Content-Type": "text/csv"},
        content=b"id,name\n1,x\n",
    )
    assert reply.status_code == 415, reply.text
    assert reply.headers["content-type"] == PROBLEM_JSON
    problem = reply.json()
    assert problem["title"] == "Unsupported Media Type"
    assert "application/x-ndjson" in problem["detail"] and problem["correlationId"]


async def test_event_input_valid_by_the_schema_is_a_400_not_a_server_error(
    settings: GatewaySettings,
) -> None:
    """The orchestrator does not handle events yet (UNIMPLEMENTED): the gateway refuses them
    as bad input, before any turn starts, instead of answering 501 (found by schemathesis)."""
    body = {"tenantId": "demo", "sessionId": "s-1", "channel": "web", "input": {"type": "event"}}
    reply = await _post(settings, PROCESS, "user", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == PROBLEM_JSON
    assert reply.json()["errors"] == [
        {"field": "input.type", "detail": "event input is not handled yet: send text or speech"}
    ]
