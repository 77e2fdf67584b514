"""Tenant administration over REST, against the real gateway and the in-process mesh: a tenant's
whole life (created, configured, stocked, chatted with, audited, a user erased), and the
configuration routes' refusals: tenant guard, roles, unknown tenants, invalid configurations,
limits."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway import admin_convert as convert
from gateway.signatures import sign
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.ports import free_port
from tests.support.public_api import PublicApi, public_api_over

TENANT = "bici-norte"
"""A tenant no test creates (knowledge outlives a test: the vector index is the session's)."""
CONFIG: dict[str, Any] = {
    "name": "Bici Norte",
    "language": "es",
    "adn": "Eres el asistente de Bici Norte, una tienda de bicicletas. Tono breve y amable.",
    "safetyPolicy": "No inventes precios ni stock.",
    "allowedActions": ["create_order", "payment_link", "handoff_human"],
    "intents": [
        {
            "name": "product_inquiry",
            "examples": ["cuánto cuesta la bicicleta", "tenéis cascos", "precio del casco"],
            "replyTemplate": "{product} cuesta {price} {currency}. Quedan {stock}.",
            "replyTemplates": {"en": "{product} costs {price} {currency}."},
            "requiredSlots": ["product"],
        },
        {
            "name": "human_handoff",
            "examples": ["quiero hablar con una persona"],
            "replyTemplate": "Te paso con una persona.",
            "actionTypes": ["handoff_human"],
        },
    ],
    "escalationThreshold": 0.3,
    "dedupWindowSeconds": 120,
    "slotPrompts": {"product": {"ask": {"es": "¿Qué producto buscas?"}}},
}
PRODUCTS: list[dict[str, Any]] = [
    {
        "id": "bike-urban-7",
        "name": "Bicicleta urbana Norte 7",
        "price": "549.00",
        "currency": "EUR",
        "stock": 3,
        "description": "Bicicleta urbana de aluminio, 7 velocidades.",
        "lang": "es",
        "colours": ["negro", "azul"],
    },
    {
        "id": "helmet-aero",
        "name": "Casco Aero",
        "price": 79.9,
        "currency": "EUR",
        "stock": 12,
        "description": "Casco ligero con luz trasera.",
        "lang": "es",
    },
]
NDJSON = {"Content-Type": "application/x-ndjson"}


def catalogue(products: list[dict[str, Any]] = PRODUCTS) -> str:
    return "\n".join(json.dumps(product) for product in products) + "\n"


def new_tenant() -> str:
    """A tenant id of its own for each test: the retrieval index outlives the test."""
    return f"shop-{uuid.uuid4().hex[:12]}"


def roles(api: PublicApi, tenant: str) -> dict[str, dict[str, str]]:
    """Headers for every role: `platform` is a platform-admin of another tenant."""
    return {
        "platform": api.headers(tenant="platform", role="platform-admin", subject="root"),
        "admin": api.headers(tenant=tenant, role="tenant-admin", subject="boss"),
        "agent": api.headers(tenant=tenant, role="agent", subject="agent-1"),
        "user": api.headers(tenant=tenant, role="user", subject="ana"),
        "stranger": api.headers(tenant="other-shop", role="tenant-admin", subject="mallory"),
    }


async def create_tenant(api: PublicApi, tenant: str, **changes: Any) -> dict[str, Any]:
    reply = await api.client.put(
        f"/v2/tenants/{tenant}", headers=roles(api, tenant)["platform"], json=CONFIG | changes
    )
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_a_tenant_from_creation_to_an_erased_user(public_api: PublicApi) -> None:
    tenant = new_tenant()
    client, who = public_api.client, roles(public_api, tenant)
    base = f"/v2/tenants/{tenant}"

    created = await create_tenant(public_api, tenant)
    assert created["tenantId"] == tenant and created["escalationThreshold"] == 0.3
    read = await client.get(base, headers=who["agent"])
    assert read.status_code == 200 and read.json() == created

    replaced = await client.put(
        base, headers=who["admin"], json=CONFIG | {"dedupWindowSeconds": 30}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json() == created | {"dedupWindowSeconds": 30}

    stocked = await client.post(
        f"{base}/knowledge", headers=who["admin"] | NDJSON, content=catalogue()
    )
    assert stocked.status_code == 200, stocked.text
    assert stocked.json() == {"upserted": 2, "unchanged": 0, "rejected": 0, "rejections": []}

    found = await client.get(
        f"{base}/knowledge/search", headers=who["agent"], params={"q": "casco"}
    )
    assert found.status_code == 200, found.text
    best = found.json()["hits"][0]
    assert best["docId"] == "helmet-aero" and best["source"] == "catalogue"
    assert best["fields"] | {"price": 79.9} == {
        "id": "helmet-aero",
        "name": "Casco Aero",
        "price": 79.9,
        "currency": "EUR",
        "stock": 12,
    }

    chat = await client.post(
        "/v2/agents/meta-agent/process",
        headers=who["user"],
        json={
            "tenantId": tenant,
            "sessionId": "chat-1",
            "channel": "web",
            "input": {"type": "text", "text": "¿Cuánto cuesta el casco Aero?"},
        },
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["responseText"] == "Casco Aero cuesta 79,90 €. Quedan 12."
    assert chat.json()["intent"] == "product_inquiry"

    for reader in ("agent", "user"):
        session = await client.get(f"{base}/sessions/chat-1", headers=who[reader])
        assert session.status_code == 200, session.text
        body = session.json()
        assert (body["userId"], body["channel"], body["nextPageToken"]) == ("ana", "web", "")
        assert body["shortContext"]["lastIntent"] == "product_inquiry"
        assert [(t["role"], t["text"]) for t in body["turns"]] == [
            ("user", "¿Cuánto cuesta el casco Aero?"),
            ("agent", "Casco Aero cuesta 79,90 €. Quedan 12."),
        ]
        assert body["turns"][1]["metadata"]["model"] == "offline"

    consent = f"{base}/users/ana/consent"
    granted = await client.put(consent, headers=who["user"], json={"voiceRecording": True})
    assert granted.status_code == 200, granted.text
    assert granted.json()["voiceRecording"] is True and granted.json()["consentDate"]
    revoked = await client.put(consent, headers=who["admin"], json={"voiceRecording": False})
    assert revoked.json()["voiceRecording"] is False and revoked.json()["revokedDate"]

    erased = await client.delete(f"{base}/users/ana", headers=who["admin"])
    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "userId": "ana",
        "sessionsErased": 1,
        "turnsErased": 2,
        "consentErased": True,
    }
    gone = await client.get(f"{base}/sessions/chat-1", headers=who["agent"])
    assert gone.status_code == 404
    nothing = await client.get(consent, headers=who["admin"])
    assert nothing.json() == {
        "userId": "ana",
        "voiceRecording": False,
        "dataLearning": False,
        "consentDate": None,
        "revokedDate": None,
    }

    audit = await client.get(f"{base}/audit", headers=who["admin"])
    assert audit.status_code == 200, audit.text
    entries = audit.json()["entries"]
    assert [e["action"] for e in entries] == [
        "tenant_configured",
        "tenant_configured",
        "consent_granted",
        "consent_revoked",
        "user_erased",
    ]
    assert {e["actor"] for e in entries} == {"gateway"}  # every entry names who acted
    assert [e["payload"]["byRole"] for e in entries] == [
        "platform-admin",
        "tenant-admin",
        "user",
        "tenant-admin",
        "tenant-admin",
    ]
    assert [e["payload"]["created"] for e in entries[:2]] == [True, False]
    assert entries[1]["payload"]["dedupWindowSeconds"] == 30
    assert "ana" not in json.dumps(entries)  # users are named by a non-reversible reference
    assert "boss" not in json.dumps(entries) and "Bici Norte" not in json.dumps(entries)
    verified = await client.get(f"{base}/audit/verify", headers=who["admin"])
    assert verified.json() == {
        "valid": True,
        "entriesChecked": 5,
        "firstInvalidSequence": 0,
        "firstInvalidReason": "",
        "headHash": entries[-1]["hash"],
    }


async def test_the_demo_configuration_reads_back_and_replaces_unchanged(
    public_api: PublicApi,
) -> None:
    admin = public_api.headers(tenant="demo", role="tenant-admin", subject="boss")
    demo = await public_api.client.get("/v2/tenants/demo", headers=admin)
    assert demo.status_code == 200
    assert demo.json()["allowedActions"] == [
        "create_order",
        "payment_link",
        "create_ticket",
        "handoff_human",
    ]
    again = await public_api.client.put("/v2/tenants/demo", headers=admin, json=demo.json())
    assert again.status_code == 200, again.text
    assert again.json() == demo.json()


async def test_only_a_platform_admin_creates_a_tenant(public_api: PublicApi) -> None:
    who = roles(public_api, TENANT)
    refused = await public_api.client.put(
        f"/v2/tenants/{TENANT}", headers=who["admin"], json=CONFIG
    )
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["detail"] == "only a platform-admin creates a tenant"
    missing = await public_api.client.get(f"/v2/tenants/{TENANT}", headers=who["platform"])
    assert missing.status_code == 404
    assert missing.json()["reason"] == "TENANT_NOT_FOUND"


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_a_token_for_another_tenant_is_403(public_api: PublicApi, method: str) -> None:
    tenant = new_tenant()
    await create_tenant(public_api, tenant)
    reply = await public_api.client.request(
        method, f"/v2/tenants/{tenant}", headers=roles(public_api, tenant)["stranger"], json=CONFIG
    )
    assert reply.status_code == 403
    assert reply.json()["title"] == "Tenant mismatch"


@pytest.mark.parametrize(("method", "role"), [("PUT", "agent"), ("PUT", "user"), ("GET", "user")])
async def test_roles_without_the_right_are_403(
    public_api: PublicApi, method: str, role: str
) -> None:
    tenant = new_tenant()
    created = await create_tenant(public_api, tenant)
    who = roles(public_api, tenant)
    reply = await public_api.client.request(
        method, f"/v2/tenants/{tenant}", headers=who[role], json=CONFIG | {"name": "Taken over"}
    )
    assert reply.status_code == 403
    assert "needs the role" in reply.json()["detail"]
    after = await public_api.client.get(f"/v2/tenants/{tenant}", headers=who["admin"])
    assert after.json() == created


QUOTAS = {"dailyTokenBudget": 1000, "turnsPerMinute": 10}


async def test_a_tenant_admin_write_keeps_the_platforms_quotas(public_api: PublicApi) -> None:
    tenant = new_tenant()
    who, base = roles(public_api, tenant), f"/v2/tenants/{tenant}"
    created = await create_tenant(public_api, tenant, **QUOTAS)
    assert created["dailyTokenBudget"] == 1000 and created["turnsPerMinute"] == 10

    left_out = await public_api.client.put(base, headers=who["admin"], json=CONFIG)
    assert left_out.status_code == 200, left_out.text
    assert left_out.json() == created, "the quotas left out are kept, not reset to unlimited"
    repeated = CONFIG | QUOTAS | {"adn": "Otro tono."}
    same = await public_api.client.put(base, headers=who["admin"], json=repeated)
    assert same.status_code == 200, same.text
    assert same.json() == created | {"adn": "Otro tono."}
    read = await public_api.client.get(base, headers=who["admin"])
    assert read.json() == created | {"adn": "Otro tono."}
    again = await public_api.client.put(base, headers=who["admin"], json=read.json())
    assert again.status_code == 200, "what a tenant-admin reads it may write back"


@pytest.mark.parametrize(
    "change",
    [
        {"dailyTokenBudget": 0},  # 0 is unlimited
        {"dailyTokenBudget": 10**9},
        {"turnsPerMinute": 0},  # 0 is the platform default
        {"turnsPerMinute": 100_000},
        {"dailyTokenBudget": 1000, "turnsPerMinute": 11},
    ],
)
@pytest.mark.parametrize("caller", ["admin", "hmac-admin"])
async def test_a_tenant_admin_cannot_change_the_quotas(
    mesh: InProcessMesh, change: dict[str, int], caller: str
) -> None:
    tenant = new_tenant()
    clients = {"ops": {"secret": "o" * 40, "tenantId": tenant, "role": "tenant-admin"}}
    async with public_api_over(mesh, hmac_clients=clients) as api:
        who, base = roles(api, tenant), f"/v2/tenants/{tenant}"
        created = await create_tenant(api, tenant, **QUOTAS)
        body = json.dumps(CONFIG | {"adn": "Sin límites."} | change).encode()
        headers = who["admin"] | {"Content-Type": "application/json"}
        if caller == "hmac-admin":
            signed = sign(b"o" * 40, body, method="PUT", target=base)
            headers = {"X-Client-Id": "ops", "X-Signature": signed}
            headers |= {"Content-Type": "application/json"}
        refused = await api.client.put(base, headers=headers, content=body)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Forbidden"
        for name in change:
            if change[name] != QUOTAS[name]:
                assert name in refused.json()["detail"]
        after = await api.client.get(base, headers=who["admin"])
        assert after.json() == created, "nothing was written"


async def test_a_platform_admin_changes_the_quotas(public_api: PublicApi) -> None:
    tenant = new_tenant()
    who, base = roles(public_api, tenant), f"/v2/tenants/{tenant}"
    await create_tenant(public_api, tenant, **QUOTAS)
    raised = CONFIG | {"dailyTokenBudget": 5000, "turnsPerMinute": 60}
    reply = await public_api.client.put(base, headers=who["platform"], json=raised)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["dailyTokenBudget"], reply.json()["turnsPerMinute"]) == (5000, 60)
    cleared = await public_api.client.put(base, headers=who["platform"], json=CONFIG)
    assert (cleared.json()["dailyTokenBudget"], cleared.json()["turnsPerMinute"]) == (0, 0)


async def test_an_unknown_tenant_is_404_and_no_token_401(public_api: PublicApi) -> None:
    who = roles(public_api, tenant="nowhere")
    unknown = await public_api.client.get("/v2/tenants/nowhere", headers=who["admin"])
    assert unknown.status_code == 404
    assert unknown.json()["correlationId"] == unknown.headers["X-Correlation-Id"]
    anonymous = await public_api.client.get("/v2/tenants/demo")
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"escalationThreshold": 1.5}, "escalationThreshold"),
        ({"escalationThreshold": -0.1}, "escalationThreshold"),
        ({"dedupWindowSeconds": -1}, "dedupWindowSeconds"),
        ({"dailyTokenBudget": -5}, "dailyTokenBudget"),
        ({"turnsPerMinute": -1}, "turnsPerMinute"),
        ({"name": "   "}, "name"),
        ({"language": "spanish!"}, "language"),
        ({"allowedActions": ["teleport"]}, "allowedActions.0"),
        ({"allowedActions": ["handoff_human", "handoff_human"]}, "allowedActions"),
        ({"tenantId": "someone-else"}, "tenantId"),
        ({"slotPrompts": {"shoe_size": {"ask": {"es": "?"}}}}, "slotPrompts.shoe_size.[key]"),
        ({"unknownField": 1}, "unknownField"),
        (
            {"intents": [{"name": "buy", "actionTypes": ["create_order"]}]},
            "intents.0.actionTypes",
        ),
        ({"intents": [{"name": "buy", "requiredSlots": ["shoe"]}]}, "intents.0.requiredSlots.0"),
        ({"intents": [{"name": "buy", "follows": ["checkout"]}]}, "intents.0.follows"),
        ({"intents": [{"name": "buy"}, {"name": "buy"}]}, "intents.1.name"),
        ({"intents": [{"name": "buy", "examples": [""]}]}, "intents.0.examples.0"),
    ],
)
async def test_an_invalid_configuration_is_400_naming_the_field(
    public_api: PublicApi, change: dict[str, Any], field: str
) -> None:
    who = roles(public_api, TENANT)
    body = CONFIG | {"allowedActions": ["handoff_human"], "intents": []} | change
    reply = await public_api.client.put(f"/v2/tenants/{TENANT}", headers=who["platform"], json=body)
    assert reply.status_code == 400, reply.text
    assert field in {error["field"] for error in reply.json()["errors"]}
    missing = await public_api.client.get(f"/v2/tenants/{TENANT}", headers=who["platform"])
    assert missing.status_code == 404  # nothing was stored


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("tenant_id", ("tenantId",)),
        ("intents[3].action_types", ("intents", 3, "actionTypes")),
        ("intents[0].examples[12]", ("intents", 0, "examples", 12)),
        ('slot_prompts["order_id"].ask["es-CO"]', ("slotPrompts", "order_id", "ask", "es-CO")),
        ('intents[1].reply_templates["a\\"b"]', ("intents", 1, "replyTemplates", 'a"b')),
    ],
)
def test_the_shared_rules_name_fields_as_the_json_body_does(
    path: str, location: tuple[str | int, ...]
) -> None:
    """The context service's rules (services/mesh/tenant_rules.py) name protobuf paths; the
    gateway answers with the body's camelCase locations."""
    assert convert.json_location(path) == location


async def test_a_body_that_is_not_a_configuration_is_400(public_api: PublicApi) -> None:
    admin = roles(public_api, TENANT)["platform"]
    for content in (b"{not json", b"", b"[]", json.dumps({"name": "x"}).encode()):
        reply = await public_api.client.put(
            f"/v2/tenants/{TENANT}",
            headers=admin | {"Content-Type": "application/json"},
            content=content,
        )
        assert reply.status_code == 400, content


async def test_a_malformed_tenant_id_is_400(public_api: PublicApi) -> None:
    admin = roles(public_api, TENANT)["platform"]
    reply = await public_api.client.get("/v2/tenants/bad.tenant!", headers=admin)
    assert reply.status_code == 400
    assert reply.json()["errors"][0]["field"] == "tenantId"


@pytest.fixture
async def small_api(mesh: InProcessMesh) -> AsyncIterator[PublicApi]:
    async with public_api_over(mesh, max_tenant_config_bytes=2048) as api:
        yield api


async def test_an_oversized_configuration_is_413(small_api: PublicApi) -> None:
    body = CONFIG | {"adn": "x" * 3000}
    reply = await small_api.client.put(
        f"/v2/tenants/{TENANT}", headers=roles(small_api, TENANT)["platform"], json=body
    )
    assert reply.status_code == 413
    assert reply.json()["title"] == "Payload Too Large"


async def test_the_context_service_down_is_503(mesh: InProcessMesh) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with public_api_over(mesh, context_addr=dead, grpc_retry_attempts=1) as api:
        who = roles(api, "demo")
        read = await api.client.get("/v2/tenants/demo", headers=who["platform"])
        write = await api.client.put("/v2/tenants/demo", headers=who["admin"], json=CONFIG)
    for reply in (read, write):
        assert reply.status_code == 503
        assert reply.headers["content-type"] == "application/problem+json"


async def test_every_admin_route_documents_its_problems(public_api: PublicApi) -> None:
    spec = (await public_api.client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert {"Problem", "FieldError", "TenantConfig", "IngestResult"} <= set(schemas)
    operations = [
        (path, operation)
        for path, item in spec["paths"].items()
        if path.startswith("/v2/tenants/") and not path.endswith("/handoff")
        for operation in item.values()
    ]
    assert len(operations) == 11
    for path, operation in operations:
        for status in ("400", "401", "403"):
            content = operation["responses"][status]["content"]
            assert content["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }, (path, status)
        assert "application/json" in operation["responses"]["200"]["content"], path
