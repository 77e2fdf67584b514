"""A tenant's knowledge over REST: documents and JSON Lines catalogues in (all or nothing),
searched as the agent searches, deleted; and every refusal (bad lines by number, limits, media
types, roles, tenants)."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.gateway.test_tenants_api import (
    NDJSON,
    PRODUCTS,
    catalogue,
    create_tenant,
    new_tenant,
    roles,
)
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.ports import free_port
from tests.support.public_api import PublicApi, public_api_over

DOCUMENTS: list[dict[str, Any]] = [
    {
        "docId": "faq-returns",
        "title": "Devoluciones",
        "text": "Tienes 30 días para devolver una bicicleta sin usar; la recogemos gratis.",
        "source": "faq",
        "lang": "es",
        "category": "returns",
        "tags": ["devoluciones"],
        "metadata": {"mediaType": "text/plain", "owner": "soporte"},
    },
    {"docId": "faq-workshop", "text": "El taller revisa tu bicicleta en 48 horas por 25 EUR."},
]


async def _stocked(api: PublicApi) -> tuple[str, str, dict[str, dict[str, str]]]:
    """A new tenant: its knowledge path and the headers of every role."""
    tenant = new_tenant()
    await create_tenant(api, tenant)
    return tenant, f"/v2/tenants/{tenant}/knowledge", roles(api, tenant)


async def _search(api: PublicApi, tenant: str, query: str) -> list[dict[str, Any]]:
    reply = await api.client.get(
        f"/v2/tenants/{tenant}/knowledge/search",
        headers=roles(api, tenant)["admin"],
        params={"q": query},
    )
    assert reply.status_code == 200, reply.text
    hits: list[dict[str, Any]] = reply.json()["hits"]
    return hits


async def test_documents_are_ingested_searched_and_deleted(public_api: PublicApi) -> None:
    tenant, base, who = await _stocked(public_api)
    stored = await public_api.client.post(base, headers=who["admin"], json=DOCUMENTS)
    assert stored.status_code == 200, stored.text
    assert stored.json()["upserted"] == 2
    again = await public_api.client.post(base, headers=who["admin"], json=DOCUMENTS)
    assert (again.json()["upserted"], again.json()["unchanged"]) == (0, 2)

    [best, *_] = await _search(public_api, tenant, "devolver una bicicleta")
    assert best["docId"] == "faq-returns" and best["visibility"] == "tenant"
    assert (best["source"], best["lang"], best["category"], best["tags"]) == (
        "faq",
        "es",
        "returns",
        ["devoluciones"],
    )
    assert best["fields"] == {
        "mediaType": "text/plain",
        "owner": "soporte",
        "title": "Devoluciones",
    }
    assert 0 < best["score"] <= 1

    deleted = await public_api.client.delete(f"{base}/faq-returns", headers=who["admin"])
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"docId": "faq-returns", "deletedChunks": 1}
    hits = await _search(public_api, tenant, "devolver")
    assert [hit["docId"] for hit in hits] == ["faq-workshop"]
    twice = await public_api.client.delete(f"{base}/faq-returns", headers=who["admin"])
    assert twice.status_code == 404
    assert twice.headers["content-type"] == "application/problem+json"
    assert twice.json()["reason"] == "DOCUMENT_NOT_FOUND"
    never = await public_api.client.delete(f"{base}/faq-unknown", headers=who["admin"])
    assert (never.status_code, never.json()["reason"]) == (404, "DOCUMENT_NOT_FOUND")
    assert never.json()["correlationId"] == never.headers["X-Correlation-Id"]


@pytest.mark.parametrize("media", ["application/x-ndjson", "application/jsonl; charset=utf-8"])
async def test_a_catalogue_is_streamed_in_as_products(public_api: PublicApi, media: str) -> None:
    tenant, base, who = await _stocked(public_api)
    lines = "\r\n\n".join(json.dumps(product) for product in PRODUCTS)  # blank lines, CRLF
    reply = await public_api.client.post(
        base, headers=who["admin"] | {"Content-Type": media}, content=lines
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["upserted"] == 2
    [bike, *_] = await _search(public_api, tenant, "bicicleta urbana")
    assert bike["docId"] == "bike-urban-7"
    assert bike["fields"]["colours"] == ["negro", "azul"]
    assert (bike["fields"]["price"], bike["fields"]["stock"]) == (549, 3)


async def test_a_catalogue_with_bad_lines_is_400_naming_them_and_stores_nothing(
    public_api: PublicApi,
) -> None:
    tenant, base, who = await _stocked(public_api)
    good = catalogue().splitlines()
    lines = [
        good[0],
        "{not json",
        '{"id": "no-currency", "name": "Timbre", "price": 5}',
        good[1],
        '{"id": "bike-urban-7", "name": "Otra bici"}',
        '{"id": "has space", "name": "Guantes"}',
        '{"id": "x", "name": "Luz", "stock": -1}',
    ]
    reply = await public_api.client.post(
        base, headers=who["admin"] | NDJSON, content="\n".join(lines)
    )
    assert reply.status_code == 400, reply.text
    errors = {error["field"]: error["detail"] for error in reply.json()["errors"]}
    assert sorted(errors) == ["line 2", "line 3", "line 5", "line 6", "line 7"]
    assert "currency" in errors["line 3"]
    assert errors["line 5"] == "product.id 'bike-urban-7' is already on line 1"
    assert "stock" in errors["line 7"]
    assert await _search(public_api, tenant, "bicicleta urbana casco") == []


async def test_many_bad_lines_are_named_up_to_a_hundred(public_api: PublicApi) -> None:
    tenant, base, who = await _stocked(public_api)
    body = catalogue() + '{"id": "x"}\n' * 150
    reply = await public_api.client.post(base, headers=who["admin"] | NDJSON, content=body)
    assert reply.status_code == 400
    errors = reply.json()["errors"]
    assert len(errors) == 101
    assert errors[0] == {"field": "line 3", "detail": "product.name is required"}
    assert errors[-1] == {"field": "body", "detail": "50 more bad lines"}
    assert await _search(public_api, tenant, "casco") == []


async def test_a_line_that_is_not_utf8_is_named(public_api: PublicApi) -> None:
    tenant, base, who = await _stocked(public_api)
    body = catalogue().encode() + b'{"id": "bell", "name": "Timbre \xff"}\n'
    reply = await public_api.client.post(base, headers=who["admin"] | NDJSON, content=body)
    assert reply.status_code == 400
    assert reply.json()["errors"] == [{"field": "line 3", "detail": "line is not valid UTF-8"}]
    assert await _search(public_api, tenant, "casco") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"docId": "a", "text": "b"}, "body"),
        ([{"docId": "a"}], "0.text"),
        ([{"docId": "a", "text": "   "}], "0.text"),
        ([{"docId": "bad id", "text": "b"}], "0.docId"),
        ([{"docId": "a", "text": "b", "lang": "???"}], "0.lang"),
        ([{"docId": "a", "text": "b", "extra": 1}], "0.extra"),
        ([{"docId": "a", "text": "b"}, {"docId": "a", "text": "c"}], "1.docId"),
        ([{"docId": f"d{i}", "text": "b"} for i in range(101)], "body"),
    ],
)
async def test_invalid_documents_are_400_and_nothing_is_stored(
    public_api: PublicApi, body: Any, field: str
) -> None:
    tenant, base, who = await _stocked(public_api)
    reply = await public_api.client.post(base, headers=who["admin"], json=body)
    assert reply.status_code == 400, reply.text
    assert field in {error["field"] for error in reply.json()["errors"]}, reply.json()
    assert await _search(public_api, tenant, "b c") == []


async def test_a_body_that_is_not_json_is_400(public_api: PublicApi) -> None:
    _, base, who = await _stocked(public_api)
    reply = await public_api.client.post(
        base, headers=who["admin"] | {"Content-Type": "application/json"}, content=b"[{"
    )
    assert reply.status_code == 400


@pytest.mark.parametrize("content", ["", "\n  \n"])
async def test_an_empty_catalogue_is_400(public_api: PublicApi, content: str) -> None:
    _, base, who = await _stocked(public_api)
    reply = await public_api.client.post(base, headers=who["admin"] | NDJSON, content=content)
    assert reply.status_code == 400
    assert reply.json()["errors"] == [{"field": "body", "detail": "the catalogue has no products"}]


@pytest.mark.parametrize("media", ["text/plain", "text/csv", ""])
async def test_other_media_types_are_415(public_api: PublicApi, media: str) -> None:
    tenant, base, who = await _stocked(public_api)
    reply = await public_api.client.post(
        base, headers=who["admin"] | {"Content-Type": media}, content=catalogue()
    )
    assert reply.status_code == 415
    assert reply.headers["content-type"] == "application/problem+json"
    assert await _search(public_api, tenant, "casco") == []


@pytest.fixture
async def small_api(mesh: InProcessMesh) -> AsyncIterator[PublicApi]:
    async with public_api_over(mesh, max_knowledge_bytes=2048, max_catalogue_items=3) as api:
        yield api


async def test_oversized_bodies_and_catalogues_are_413_and_store_nothing(
    small_api: PublicApi,
) -> None:
    tenant, base, who = await _stocked(small_api)
    big = [{"docId": "manual", "text": "pedal " * 500}]
    too_big = await small_api.client.post(base, headers=who["admin"], json=big)
    assert too_big.status_code == 413
    many = [{"id": f"p{i}", "name": f"Pieza {i}"} for i in range(4)]
    too_many = await small_api.client.post(
        base, headers=who["admin"] | NDJSON, content=catalogue(many)
    )
    assert too_many.status_code == 413
    assert "3 products" in too_many.json()["detail"]
    assert await _search(small_api, tenant, "pedal pieza") == []


async def test_documents_beyond_one_grpc_message_are_413(mesh: InProcessMesh) -> None:
    async with public_api_over(mesh, max_knowledge_bytes=16 * 1024 * 1024) as api:
        tenant, base, who = await _stocked(api)
        manuals = [{"docId": f"manual-{i}", "text": "pedal " * 180_000} for i in range(9)]
        reply = await api.client.post(base, headers=who["admin"], json=manuals)
        assert reply.status_code == 413
        assert "fewer per request" in reply.json()["detail"]
        assert await _search(api, tenant, "pedal") == []


async def test_the_knowledge_limit_is_not_the_general_body_limit(public_api: PublicApi) -> None:
    _, base, who = await _stocked(public_api)
    products = [
        {"id": f"part-{i}", "name": f"Recambio {i}", "description": "tornillería " * 40}
        for i in range(300)
    ]
    body = catalogue(products)
    assert len(body.encode()) > public_api.settings.max_body_bytes
    reply = await public_api.client.post(base, headers=who["admin"] | NDJSON, content=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["upserted"] == 300


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("agent", "POST", "{base}"),
        ("user", "POST", "{base}"),
        ("agent", "DELETE", "{base}/faq-workshop"),
        ("user", "GET", "{base}/search?q=taller"),
        ("stranger", "POST", "{base}"),
        ("stranger", "GET", "{base}/search?q=taller"),
        ("stranger", "DELETE", "{base}/faq-workshop"),
    ],
)
async def test_roles_and_tenants_without_the_right_are_403(
    public_api: PublicApi, role: str, method: str, path: str
) -> None:
    tenant, base, who = await _stocked(public_api)
    stored = await public_api.client.post(base, headers=who["admin"], json=DOCUMENTS)
    assert stored.status_code == 200
    reply = await public_api.client.request(
        method, path.format(base=base), headers=who[role], json=[{"docId": "x", "text": "taller"}]
    )
    assert reply.status_code == 403
    hits = await _search(public_api, tenant, "taller")
    assert [hit["docId"] for hit in hits] == ["faq-workshop"]  # not deleted, nothing added


async def test_an_agent_may_search(public_api: PublicApi) -> None:
    _, base, who = await _stocked(public_api)
    await public_api.client.post(base, headers=who["admin"], json=DOCUMENTS)
    reply = await public_api.client.get(
        f"{base}/search", headers=who["agent"], params={"q": "taller", "topK": 1}
    )
    assert reply.status_code == 200
    assert [hit["docId"] for hit in reply.json()["hits"]] == ["faq-workshop"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v2/tenants/nowhere/knowledge", {"json": DOCUMENTS}),
        ("POST", "/v2/tenants/nowhere/knowledge", {"content": catalogue(), "headers": NDJSON}),
        ("GET", "/v2/tenants/nowhere/knowledge/search?q=taller", {}),
        ("DELETE", "/v2/tenants/nowhere/knowledge/faq-workshop", {}),
    ],
)
async def test_an_unknown_tenant_is_404(
    public_api: PublicApi, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    headers = roles(public_api, "nowhere")["platform"] | kwargs.pop("headers", {})
    reply = await public_api.client.request(method, path, headers=headers, **kwargs)
    assert reply.status_code == 404, reply.text
    assert reply.json()["reason"] == "TENANT_NOT_FOUND"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 4001}, "q"),
        ({"q": "taller", "topK": 0}, "topK"),
        ({"q": "taller", "topK": 51}, "topK"),
        ({"q": "taller", "minScore": 1.5}, "minScore"),
        ({"q": "taller", "includeGlobal": "perhaps"}, "includeGlobal"),
    ],
)
async def test_bad_search_parameters_are_400(
    public_api: PublicApi, params: dict[str, Any], field: str
) -> None:
    _, base, who = await _stocked(public_api)
    reply = await public_api.client.get(f"{base}/search", headers=who["admin"], params=params)
    assert reply.status_code == 400
    assert [error["field"] for error in reply.json()["errors"]] == [field]


async def test_a_malformed_document_id_is_400(public_api: PublicApi) -> None:
    _, base, who = await _stocked(public_api)
    reply = await public_api.client.delete(f"{base}/bad%20id", headers=who["admin"])
    assert reply.status_code == 400
    assert reply.json()["errors"][0]["field"] == "docId"


async def test_the_retrieval_service_down_is_503(mesh: InProcessMesh) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with public_api_over(mesh, retrieval_addr=dead, grpc_retry_attempts=1) as api:
        _, base, who = await _stocked(api)
        stored = await api.client.post(base, headers=who["admin"] | NDJSON, content=catalogue())
        assert stored.status_code == 503
        assert stored.headers["content-type"] == "application/problem+json"
        found = await api.client.get(f"{base}/search?q=casco", headers=who["agent"])
        assert found.status_code == 503
