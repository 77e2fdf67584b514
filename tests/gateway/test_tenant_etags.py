"""Optimistic concurrency on a tenant's configuration over REST: GET and PUT carry the
revision's ETag, a PUT honours If-Match (412 with the current ETag when it names another
revision, 400 when malformed), and a tenant-admin's write, which copies the stored quotas,
never overwrites a platform-admin's quota change landing between its read and its write."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from metaagent.context.v1 import context_service_pb2 as context_pb

from gateway.preconditions import IfMatch, if_match
from tests.gateway.test_tenants_api import CONFIG, QUOTAS, create_tenant, new_tenant, roles
from tests.support.public_api import PublicApi

RAISED = {"dailyTokenBudget": 5000, "turnsPerMinute": 60}


def _new_tenant(
    public_api: PublicApi,
) -> tuple[str, httpx.AsyncClient, dict[str, dict[str, str]], str]:
    """A tenant id no other test uses, the client, each role's headers and the tenant's URL."""
    tenant = new_tenant()
    return tenant, public_api.client, roles(public_api, tenant), f"/v2/tenants/{tenant}"


def _platform_write(
    client: httpx.AsyncClient,
    who: dict[str, dict[str, str]],
    base: str,
    quotas: dict[str, int],
    replies: list[httpx.Response] | None = None,
) -> Callable[[], Awaitable[None]]:
    """A platform-admin's write of `quotas`, to run between a tenant-admin's read and write."""

    async def put() -> None:
        reply = await client.put(base, headers=who["platform"], json=CONFIG | quotas)
        if replies is not None:
            replies.append(reply)

    return put


def _quotas(body: dict[str, Any]) -> tuple[int, int]:
    return body["dailyTokenBudget"], body["turnsPerMinute"]


def _precondition_failed(reply: httpx.Response, etag: str | None) -> None:
    assert reply.status_code == 412, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert (problem["title"], problem["status"]) == ("Precondition Failed", 412)
    assert problem["reason"] == "TENANT_REVISION_MISMATCH"
    assert problem["correlationId"] == reply.headers["X-Correlation-Id"]
    assert reply.headers.get("ETag") == etag


# --- ETag on reads and writes -----------------------------------------------------------------


async def test_reads_and_writes_carry_the_revision_as_a_strong_etag(
    public_api: PublicApi,
) -> None:
    _, client, who, base = _new_tenant(public_api)
    created = await client.put(base, headers=who["platform"], json=CONFIG | QUOTAS)
    assert (created.status_code, created.headers["ETag"]) == (201, '"1"')
    read = await client.get(base, headers=who["agent"])
    assert (read.headers["ETag"], read.json()) == ('"1"', created.json())

    replaced = await client.put(base, headers=who["admin"], json=CONFIG | {"adn": "Otro tono."})
    assert (replaced.status_code, replaced.headers["ETag"]) == (200, '"2"')
    conditional = await client.put(
        base, headers=who["platform"] | {"If-Match": '"2"'}, json=CONFIG | RAISED
    )
    assert (conditional.status_code, conditional.headers["ETag"]) == (200, '"3"')
    again = await client.get(base, headers=who["admin"])
    assert (again.headers["ETag"], again.json()) == ('"3"', conditional.json())
    assert _quotas(again.json()) == (5000, 60)


# --- If-Match ---------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["admin", "platform"])
async def test_an_if_match_naming_another_revision_is_412_and_writes_nothing(
    public_api: PublicApi, writer: str
) -> None:
    tenant, client, who, base = _new_tenant(public_api)
    await create_tenant(public_api, tenant, **QUOTAS)
    first = await client.put(
        base, headers=who[writer] | {"If-Match": '"1"'}, json=CONFIG | {"adn": "Primero."}
    )
    assert (first.status_code, first.headers["ETag"]) == (200, '"2"')

    stale = await client.put(
        base, headers=who[writer] | {"If-Match": '"1"'}, json=CONFIG | {"adn": "Segundo."}
    )
    _precondition_failed(stale, '"2"')
    for tags in ('W/"2"', '"02"', '"two"', '"1", "3"', '"99999999999999999999999"'):
        refused = await client.put(
            base, headers=who[writer] | {"If-Match": tags}, json=CONFIG | {"adn": "Tercero."}
        )
        _precondition_failed(refused, '"2"')
    after = await client.get(base, headers=who["admin"])
    assert (after.headers["ETag"], after.json()["adn"]) == ('"2"', "Primero.")

    listed = await client.put(
        base, headers=who[writer] | {"If-Match": '"1", W/"3", "2"'}, json=CONFIG
    )
    assert (listed.status_code, listed.headers["ETag"]) == (200, '"3"')


@pytest.mark.parametrize("writer", ["admin", "platform"])
async def test_if_match_star_replaces_whatever_revision_exists(
    public_api: PublicApi, writer: str
) -> None:
    tenant, client, who, base = _new_tenant(public_api)
    await create_tenant(public_api, tenant, **QUOTAS)
    await client.put(base, headers=who["platform"], json=CONFIG | QUOTAS | {"adn": "v2"})
    star = await client.put(
        base, headers=who[writer] | {"If-Match": "*"}, json=CONFIG | QUOTAS | {"adn": "v3"}
    )
    assert (star.status_code, star.headers["ETag"], star.json()["adn"]) == (200, '"3"', "v3")


@pytest.mark.parametrize("tags", ["*", '"1"', '"1", "2"'])
async def test_if_match_never_creates_a_tenant(public_api: PublicApi, tags: str) -> None:
    _, client, who, base = _new_tenant(public_api)
    refused = await client.put(base, headers=who["platform"] | {"If-Match": tags}, json=CONFIG)
    _precondition_failed(refused, None)
    assert (await client.get(base, headers=who["platform"])).status_code == 404


@pytest.mark.parametrize(
    "value", ["1", '"1" "2"', '*, "1"', '"unterminated', "W/1", '"a"b"', ",", " ", 'w/"1"']
)
async def test_a_malformed_if_match_is_400_and_writes_nothing(
    public_api: PublicApi, value: str
) -> None:
    tenant, client, who, base = _new_tenant(public_api)
    created = await create_tenant(public_api, tenant)
    for writer in ("admin", "platform"):
        reply = await client.put(
            base, headers=who[writer] | {"If-Match": value}, json=CONFIG | {"adn": "Nunca."}
        )
        assert reply.status_code == 400, (value, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in reply.json()["errors"]] == ["If-Match"]
    after = await client.get(base, headers=who["admin"])
    assert (after.headers["ETag"], after.json()) == ('"1"', created)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["*"], IfMatch(any=True, revisions=frozenset())),
        ([' "3" '], IfMatch(any=False, revisions=frozenset({3}))),
        (['"3", W/"4",,"x,y"', '"5"'], IfMatch(any=False, revisions=frozenset({3, 5}))),
        (['"0", "-1", "9223372036854775808"'], IfMatch(any=False, revisions=frozenset())),
        (['"9223372036854775807"'], IfMatch(any=False, revisions=frozenset({2**63 - 1}))),
    ],
)
def test_if_match_names_the_revisions_of_its_strong_tags(
    values: list[str], expected: IfMatch | None
) -> None:
    assert if_match(values) == expected


# --- the race the revision closes ---------------------------------------------------------------


def _before_tenant_admin_writes(
    public_api: PublicApi, monkeypatch: pytest.MonkeyPatch, *changes: Callable[[], Awaitable[Any]]
) -> list[context_pb.PutTenantRequest]:
    """Run `changes` (one per write, in order) just before each of the gateway's next PutTenant
    calls made for a tenant-admin, i.e. between the gateway's read of the stored configuration
    and its write; returns the tenant-admin's PutTenant requests as sent."""
    stub = public_api.app.state.clients.context
    original, pending, sent = stub.PutTenant, list(changes), []

    async def put_tenant(request: context_pb.PutTenantRequest, **options: Any) -> Any:
        if request.on_behalf_of.role == "tenant-admin":
            sent.append(request)
            if pending:
                # its own task: the other request's context (correlation) stays its own
                await asyncio.create_task(pending.pop(0)())
        return await original(request, **options)

    monkeypatch.setattr(stub, "PutTenant", put_tenant)
    return sent


async def test_a_quota_change_between_a_tenant_admins_read_and_write_survives(
    public_api: PublicApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, client, who, base = _new_tenant(public_api)
    await create_tenant(public_api, tenant, **QUOTAS)
    platform_replies: list[httpx.Response] = []
    raise_quotas = _platform_write(client, who, base, RAISED, platform_replies)
    sent = _before_tenant_admin_writes(public_api, monkeypatch, raise_quotas)
    written = await client.put(base, headers=who["admin"], json=CONFIG | {"adn": "Nuevo tono."})

    assert [r.status_code for r in platform_replies] == [200]
    assert written.status_code == 200, written.text
    assert written.headers["ETag"] == '"3"'
    assert _quotas(written.json()) == (5000, 60), "the platform's quotas survive"
    assert written.json()["adn"] == "Nuevo tono.", "the tenant-admin's own change is kept"
    assert [r.expected_revision for r in sent] == [1, 2], "refused at 1, written at 2"
    read = await client.get(base, headers=who["admin"])
    assert (read.headers["ETag"], read.json()) == ('"3"', written.json())


async def test_with_if_match_the_tenant_admin_is_told_instead(
    public_api: PublicApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, client, who, base = _new_tenant(public_api)
    await create_tenant(public_api, tenant, **QUOTAS)
    _before_tenant_admin_writes(public_api, monkeypatch, _platform_write(client, who, base, RAISED))
    refused = await client.put(
        base, headers=who["admin"] | {"If-Match": '"1"'}, json=CONFIG | {"adn": "Nuevo tono."}
    )
    _precondition_failed(refused, '"2"')
    read = await client.get(base, headers=who["admin"])
    assert read.headers["ETag"] == '"2"'
    assert (_quotas(read.json()), read.json()["adn"]) == ((5000, 60), CONFIG["adn"])


async def test_a_tenant_admin_restating_quotas_that_changed_meanwhile_is_412(
    public_api: PublicApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The body repeats the quotas it read (allowed: unchanged); the platform changes them
    before the write: writing the old values back would undo that change."""
    tenant, client, who, base = _new_tenant(public_api)
    await create_tenant(public_api, tenant, **QUOTAS)
    _before_tenant_admin_writes(public_api, monkeypatch, _platform_write(client, who, base, RAISED))
    refused = await client.put(
        base, headers=who["admin"], json=CONFIG | QUOTAS | {"adn": "Nuevo tono."}
    )
    _precondition_failed(refused, '"2"')
    read = await client.get(base, headers=who["admin"])
    assert _quotas(read.json()) == (5000, 60)


async def test_a_second_change_during_the_retry_is_412_never_a_silent_loss(
    public_api: PublicApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, client, who, base = _new_tenant(public_api)
    await create_tenant(public_api, tenant, **QUOTAS)
    sent = _before_tenant_admin_writes(
        public_api,
        monkeypatch,
        _platform_write(client, who, base, RAISED),
        _platform_write(client, who, base, {"dailyTokenBudget": 7, "turnsPerMinute": 7}),
    )
    refused = await client.put(base, headers=who["admin"], json=CONFIG | {"adn": "Nuevo."})
    _precondition_failed(refused, '"3"')
    assert [r.expected_revision for r in sent] == [1, 2]
    read = await client.get(base, headers=who["admin"])
    assert (_quotas(read.json()), read.json()["adn"]) == ((7, 7), CONFIG["adn"])


# --- the contract ---------------------------------------------------------------------------


async def test_the_openapi_document_states_the_headers_and_the_412(public_api: PublicApi) -> None:
    spec = (await public_api.client.get("/openapi.json")).json()
    item = spec["paths"]["/v2/tenants/{tenantId}"]
    put, get = item["put"], item["get"]
    assert {"name": "If-Match", "in": "header"}.items() <= next(
        p for p in put["parameters"] if p["name"] == "If-Match"
    ).items()
    for responses, status in ((get, "200"), (put, "200"), (put, "201"), (put, "412")):
        assert "ETag" in responses["responses"][status]["headers"], status
    assert put["responses"]["412"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
