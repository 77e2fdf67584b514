"""End users over REST: consent (self-service or by the tenant's administrator), erasure, and a
session's transcript; with every refusal (other users, roles, tenants, unknown ones, bad input)."""

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from services.context.audit import user_reference
from tests.gateway.test_tenants_api import create_tenant, new_tenant, roles
from tests.support.public_api import PublicApi

PROCESS = "/v2/agents/meta-agent/process"


async def _audit(
    api: PublicApi, base: str, who: dict[str, dict[str, str]], prefix: str = ""
) -> list[dict[str, Any]]:
    """The tenant's audit entries whose action starts with `prefix`."""
    reply = await api.client.get(f"{base}/audit", headers=who["admin"])
    assert reply.status_code == 200, reply.text
    return [e for e in reply.json()["entries"] if e["action"].startswith(prefix)]


async def _tenant(api: PublicApi) -> tuple[str, str, dict[str, dict[str, str]]]:
    tenant = new_tenant()
    await create_tenant(api, tenant)
    return tenant, f"/v2/tenants/{tenant}", roles(api, tenant)


async def _chat(api: PublicApi, tenant: str, session: str, user: str, text: str) -> None:
    reply = await api.client.post(
        PROCESS,
        headers=api.headers(tenant=tenant, role="user", subject=user),
        json={
            "tenantId": tenant,
            "sessionId": session,
            "channel": "whatsapp",
            "input": {"type": "text", "text": text},
        },
    )
    assert reply.status_code == 200, reply.text


async def test_a_user_grants_reads_and_revokes_their_own_consent(public_api: PublicApi) -> None:
    _, base, who = await _tenant(public_api)
    path = f"{base}/users/ana/consent"
    before = await public_api.client.get(path, headers=who["user"])
    assert before.status_code == 200
    assert before.json() == {
        "userId": "ana",
        "voiceRecording": False,
        "dataLearning": False,
        "consentDate": None,
        "revokedDate": None,
    }
    both = await public_api.client.put(
        path, headers=who["user"], json={"voiceRecording": True, "dataLearning": True}
    )
    assert both.status_code == 200, both.text
    assert (both.json()["voiceRecording"], both.json()["dataLearning"]) == (True, True)
    assert both.json()["consentDate"] and both.json()["revokedDate"] is None

    mixed = await public_api.client.put(path, headers=who["user"], json={"dataLearning": False})
    assert (mixed.json()["voiceRecording"], mixed.json()["dataLearning"]) == (True, False)
    assert mixed.json()["revokedDate"]
    read = await public_api.client.get(path, headers=who["user"])
    assert read.json() == mixed.json()

    tenant = base.rsplit("/", 1)[1]
    entries = await _audit(public_api, base, who, "consent_")
    assert [e["action"] for e in entries] == ["consent_granted", "consent_revoked"]
    for entry in entries:  # the gateway, acting for the user themselves
        assert entry["actor"] == "gateway"
        assert entry["payload"]["byRole"] == "user"
        assert entry["payload"]["byRef"] == entry["payload"]["userRef"]
        assert entry["payload"]["userRef"] == user_reference(tenant, "ana")
    assert "ana" not in json.dumps(entries)


async def test_a_tenant_admin_manages_any_users_consent(public_api: PublicApi) -> None:
    tenant, base, who = await _tenant(public_api)
    path = f"{base}/users/caller%2B34600111222/consent"
    granted = await public_api.client.put(
        path, headers=who["admin"], json={"voiceRecording": True, "dataLearning": False}
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["userId"] == "caller+34600111222"
    assert (granted.json()["voiceRecording"], granted.json()["dataLearning"]) == (True, False)
    entries = await _audit(public_api, base, who, "consent_")
    actions = [(e["action"], e["payload"]["kinds"]) for e in entries]
    assert actions == [  # the revocation first: a failure between the two leaves less consent
        ("consent_revoked", ["data_learning"]),
        ("consent_granted", ["voice_recording"]),
    ]
    assert entries[1]["payload"]["source"] == "admin_api"
    for entry in entries:  # the gateway, acting for the administrator "boss"
        assert entry["actor"] == "gateway"
        assert entry["payload"]["byRole"] == "tenant-admin"
        assert entry["payload"]["byRef"] == user_reference(tenant, "boss")
    assert "boss" not in json.dumps(entries)


async def test_a_users_own_grant_is_recorded_as_self_service(public_api: PublicApi) -> None:
    _, base, who = await _tenant(public_api)
    path = f"{base}/users/ana/consent"
    for body in ({"voiceRecording": True}, {"dataLearning": True, "source": "self_service"}):
        reply = await public_api.client.put(path, headers=who["user"], json=body)
        assert reply.status_code == 200, reply.text
    entries = await _audit(public_api, base, who, "consent_granted")
    assert [e["payload"]["source"] for e in entries] == ["self_service", "self_service"]


@pytest.mark.parametrize("source", ["admin_api", "ivr_prompt", "web_form"])
@pytest.mark.parametrize("change", [True, False])
async def test_a_user_cannot_choose_the_source_of_their_consent(
    public_api: PublicApi, source: str, change: bool
) -> None:
    _, base, who = await _tenant(public_api)
    path = f"{base}/users/ana/consent"
    body = {"voiceRecording": change, "source": source}
    reply = await public_api.client.put(path, headers=who["user"], json=body)
    assert reply.status_code == 403, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert "self_service" in reply.json()["detail"]
    assert await _audit(public_api, base, who, "consent_") == [], "nothing was recorded"
    read = await public_api.client.get(path, headers=who["admin"])
    assert read.json()["voiceRecording"] is False


@pytest.mark.parametrize("role", ["admin", "platform"])
async def test_an_administrator_chooses_the_source(public_api: PublicApi, role: str) -> None:
    _, base, who = await _tenant(public_api)
    reply = await public_api.client.put(
        f"{base}/users/ana/consent",
        headers=who[role],
        json={"voiceRecording": True, "source": "ivr_prompt"},
    )
    assert reply.status_code == 200, reply.text
    [entry] = await _audit(public_api, base, who, "consent_granted")
    assert entry["payload"]["source"] == "ivr_prompt"


class FailingGrants:
    """The app's context client logging the consent calls, in order, with GrantConsent failing
    (UNAVAILABLE) once `fail` is set."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.calls: list[str] = []
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def RevokeConsent(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append("revoke")
        return await self._context.RevokeConsent(request, **kwargs)

    async def GrantConsent(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append("grant")
        if not self.fail:
            return await self._context.GrantConsent(request, **kwargs)
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details="context store down",
        )


class ClientsWith:
    """The app's gRPC clients with another context client."""

    def __init__(self, clients: Any, context: Any) -> None:
        self._clients = clients
        self.context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clients, name)


@pytest.fixture
def failing_grants(public_api: PublicApi) -> Iterator[FailingGrants]:
    clients = public_api.app.state.clients
    failing = FailingGrants(clients.context)
    public_api.app.state.clients = ClientsWith(clients, failing)
    yield failing
    public_api.app.state.clients = clients  # (monkeypatch cannot restore a Starlette State)


async def test_a_grant_failing_after_the_revocation_leaves_less_consent_not_more(
    public_api: PublicApi, failing_grants: FailingGrants
) -> None:
    """No RPC changes both kinds at once: the revocation goes first, so the half-applied state
    is the safe one, and the same request sent again completes it."""
    _, base, who = await _tenant(public_api)
    path = f"{base}/users/ana/consent"
    before = await public_api.client.put(path, headers=who["admin"], json={"dataLearning": True})
    assert before.json()["dataLearning"] is True
    failing_grants.calls.clear()
    failing_grants.fail = True
    reply = await public_api.client.put(
        path, headers=who["admin"], json={"voiceRecording": True, "dataLearning": False}
    )
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert failing_grants.calls == ["revoke", "grant"]
    read = await public_api.client.get(path, headers=who["admin"])
    assert (read.json()["voiceRecording"], read.json()["dataLearning"]) == (False, False)


async def test_a_failing_grant_alone_changes_nothing(
    public_api: PublicApi, failing_grants: FailingGrants
) -> None:
    _, base, who = await _tenant(public_api)
    path = f"{base}/users/ana/consent"
    failing_grants.fail = True
    reply = await public_api.client.put(path, headers=who["user"], json={"voiceRecording": True})
    assert reply.status_code == 503, reply.text
    assert failing_grants.calls == ["grant"]
    assert await _audit(public_api, base, who, "consent_") == []


@pytest.mark.parametrize(
    ("role", "title"),
    [
        ("agent", "Forbidden"),
        ("stranger", "Tenant mismatch"),
        ("other-user", "User mismatch"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_consent_is_the_users_own_or_the_admins(
    public_api: PublicApi, role: str, title: str, method: str
) -> None:
    tenant, base, who = await _tenant(public_api)
    who["other-user"] = public_api.headers(tenant=tenant, role="user", subject="bob")
    reply = await public_api.client.request(
        method, f"{base}/users/ana/consent", headers=who[role], json={"voiceRecording": True}
    )
    assert reply.status_code == 403
    assert reply.json()["title"] == title
    after = await public_api.client.get(f"{base}/users/ana/consent", headers=who["admin"])
    assert after.json()["voiceRecording"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"voiceRecording": None}, "body"),
        ({"voiceRecording": "yes please"}, "voiceRecording"),
        ({"voiceRecording": True, "source": "a web form!"}, "source"),
        ({"voiceRecording": True, "marketing": True}, "marketing"),
    ],
)
async def test_a_consent_change_that_changes_nothing_or_is_malformed_is_400(
    public_api: PublicApi, body: dict[str, Any], field: str
) -> None:
    _, base, who = await _tenant(public_api)
    reply = await public_api.client.put(f"{base}/users/ana/consent", headers=who["user"], json=body)
    assert reply.status_code == 400, reply.text
    assert [error["field"] for error in reply.json()["errors"]] == [field]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/tenants/nowhere/users/ana/consent"),
        ("PUT", "/v2/tenants/nowhere/users/ana/consent"),
        ("DELETE", "/v2/tenants/nowhere/users/ana"),
        ("GET", "/v2/tenants/nowhere/sessions/chat-1"),
    ],
)
async def test_an_unknown_tenant_is_404(public_api: PublicApi, method: str, path: str) -> None:
    admin = roles(public_api, "nowhere")["platform"]
    reply = await public_api.client.request(
        method, path, headers=admin, json={"voiceRecording": True}
    )
    assert reply.status_code == 404, reply.text


async def test_a_user_id_with_control_characters_is_400(public_api: PublicApi) -> None:
    _, base, who = await _tenant(public_api)
    reply = await public_api.client.get(f"{base}/users/an%0Aa/consent", headers=who["admin"])
    assert reply.status_code == 400
    assert reply.json()["errors"][0]["field"] == "userId"


async def test_erasure_removes_the_users_sessions_turns_and_consent(
    public_api: PublicApi,
) -> None:
    tenant, base, who = await _tenant(public_api)
    await _chat(public_api, tenant, "chat-1", "ana", "¿Cuánto cuesta el casco?")
    await _chat(public_api, tenant, "chat-2", "ana", "quiero hablar con una persona")
    await _chat(public_api, tenant, "chat-3", "bob", "¿Tenéis cascos?")
    await public_api.client.put(
        f"{base}/users/ana/consent", headers=who["admin"], json={"dataLearning": True}
    )

    erased = await public_api.client.delete(f"{base}/users/ana", headers=who["admin"])
    assert erased.status_code == 200, erased.text
    assert erased.json() == {
        "userId": "ana",
        "sessionsErased": 2,
        "turnsErased": 4,
        "consentErased": True,
    }
    for session in ("chat-1", "chat-2"):
        gone = await public_api.client.get(f"{base}/sessions/{session}", headers=who["admin"])
        assert gone.status_code == 404
    kept = await public_api.client.get(f"{base}/sessions/chat-3", headers=who["admin"])
    assert kept.status_code == 200 and len(kept.json()["turns"]) == 2
    again = await public_api.client.delete(f"{base}/users/ana", headers=who["admin"])
    assert again.json() == {
        "userId": "ana",
        "sessionsErased": 0,
        "turnsErased": 0,
        "consentErased": False,
    }
    audit = await public_api.client.get(
        f"{base}/audit", headers=who["admin"], params={"action": "user_erased"}
    )
    first, second = audit.json()["entries"]
    assert first["actor"] == second["actor"] == "gateway"
    assert first["payload"] == {
        "userRef": user_reference(tenant, "ana"),
        "sessions": 2,
        "turns": 4,
        "consent": True,
        "replies": 2,  # both chats' stored replies, which would have replayed ana's text
        "byRole": "tenant-admin",
        "byRef": user_reference(tenant, "boss"),
    }
    assert second["payload"]["replies"] == 0


@pytest.mark.parametrize("role", ["user", "agent", "stranger"])
async def test_only_a_tenant_admin_erases_a_user(public_api: PublicApi, role: str) -> None:
    tenant, base, who = await _tenant(public_api)
    await _chat(public_api, tenant, "chat-1", "ana", "hola")
    reply = await public_api.client.delete(f"{base}/users/ana", headers=who[role])
    assert reply.status_code == 403
    kept = await public_api.client.get(f"{base}/sessions/chat-1", headers=who["agent"])
    assert kept.status_code == 200


async def test_a_transcript_is_paged_oldest_first(public_api: PublicApi) -> None:
    tenant, base, who = await _tenant(public_api)
    for text in ("hola", "¿Tenéis cascos?", "gracias"):
        await _chat(public_api, tenant, "chat-1", "ana", text)
    seen: list[str] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"pageSize": 2} | ({"pageToken": token} if token else {})
        page = await public_api.client.get(
            f"{base}/sessions/chat-1", headers=who["agent"], params=params
        )
        assert page.status_code == 200, page.text
        assert page.json()["channel"] == "whatsapp"
        seen += [turn["role"] for turn in page.json()["turns"]]
        token = page.json()["nextPageToken"]
        if not token:
            break
    assert seen == ["user", "agent"] * 3


async def test_a_user_reads_only_their_own_sessions(public_api: PublicApi) -> None:
    tenant, base, who = await _tenant(public_api)
    await _chat(public_api, tenant, "chat-ana", "ana", "hola")
    await _chat(public_api, tenant, "chat-bob", "bob", "hola")
    own = await public_api.client.get(f"{base}/sessions/chat-ana", headers=who["user"])
    assert own.status_code == 200 and own.json()["userId"] == "ana"
    other = await public_api.client.get(f"{base}/sessions/chat-bob", headers=who["user"])
    assert other.status_code == 404
    assert "chat-bob" not in other.text and "hola" not in other.text


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("chat-unknown", {}, 404),
        ("bad%20session", {}, 400),
        ("chat-1", {"pageSize": 0}, 400),
        ("chat-1", {"pageSize": 501}, 400),
        ("chat-1", {"pageToken": "not a token!"}, 400),
        ("chat-1", {"pageToken": "abc"}, 400),
    ],
)
async def test_bad_session_reads_are_refused(
    public_api: PublicApi, path: str, params: dict[str, Any], status: int
) -> None:
    tenant, base, who = await _tenant(public_api)
    await _chat(public_api, tenant, "chat-1", "ana", "hola")
    reply = await public_api.client.get(
        f"{base}/sessions/{path}", headers=who["agent"], params=params
    )
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"


async def test_another_tenants_token_reads_no_session(public_api: PublicApi) -> None:
    tenant, base, who = await _tenant(public_api)
    await _chat(public_api, tenant, "chat-1", "ana", "hola")
    reply = await public_api.client.get(f"{base}/sessions/chat-1", headers=who["stranger"])
    assert reply.status_code == 403
