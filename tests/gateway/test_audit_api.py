"""A tenant's audit log over REST: entries in chain order, filters and pages, the chain verified
(and caught when someone edits the store behind the platform's back); refusals."""

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.test_tenants_api import create_tenant, new_tenant, roles
from tests.support.public_api import PublicApi


async def _audited(api: PublicApi) -> tuple[str, dict[str, dict[str, str]], list[str]]:
    """A new tenant whose log holds its creation and three consent changes, each with its own
    correlation id."""
    tenant = new_tenant()
    await create_tenant(api, tenant)
    who = roles(api, tenant)
    base = f"/v2/tenants/{tenant}"
    changes = [
        ("ana", {"voiceRecording": True}),
        ("bob", {"dataLearning": True}),
        ("ana", {"voiceRecording": False}),
    ]
    correlation_ids = []
    for number, (user, change) in enumerate(changes):
        correlation_id = f"corr-{tenant}-{number}"
        reply = await api.client.put(
            f"{base}/users/{user}/consent",
            headers=who["admin"] | {"X-Correlation-Id": correlation_id},
            json=change,
        )
        assert reply.status_code == 200, reply.text
        correlation_ids.append(correlation_id)
    return base, who, correlation_ids


async def test_entries_come_in_chain_order_and_verify(public_api: PublicApi) -> None:
    base, who, correlation_ids = await _audited(public_api)
    page = await public_api.client.get(f"{base}/audit", headers=who["admin"])
    assert page.status_code == 200, page.text
    entries = page.json()["entries"]
    assert page.json()["nextPageToken"] == ""
    assert [e["action"] for e in entries] == [
        "tenant_configured",
        "consent_granted",
        "consent_granted",
        "consent_revoked",
    ]
    assert [e["sequence"] for e in entries] == [1, 2, 3, 4]
    assert [e["correlationId"] for e in entries[1:]] == correlation_ids
    assert all(e["timestamp"] and e["hash"] for e in entries)
    assert [e["prevHash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]

    verified = await public_api.client.get(f"{base}/audit/verify", headers=who["admin"])
    assert verified.status_code == 200
    assert verified.json() == {
        "valid": True,
        "entriesChecked": 4,
        "firstInvalidSequence": 0,
        "firstInvalidReason": "",
        "headHash": entries[-1]["hash"],
    }


async def test_pages_and_filters(public_api: PublicApi) -> None:
    base, who, correlation_ids = await _audited(public_api)
    sequences: list[int] = []
    token = ""
    while True:
        params: dict[str, Any] = {"pageSize": 2} | ({"pageToken": token} if token else {})
        page = await public_api.client.get(f"{base}/audit", headers=who["admin"], params=params)
        assert page.status_code == 200, page.text
        sequences += [entry["sequence"] for entry in page.json()["entries"]]
        token = page.json()["nextPageToken"]
        if not token:
            break
    assert sequences == [1, 2, 3, 4]

    revoked = await public_api.client.get(
        f"{base}/audit", headers=who["admin"], params={"action": "consent_revoked"}
    )
    assert [e["sequence"] for e in revoked.json()["entries"]] == [4]
    one = await public_api.client.get(
        f"{base}/audit", headers=who["admin"], params={"correlationId": correlation_ids[1]}
    )
    assert [e["sequence"] for e in one.json()["entries"]] == [3]
    none = await public_api.client.get(
        f"{base}/audit", headers=who["admin"], params={"sessionId": "chat-nobody"}
    )
    assert none.json() == {"entries": [], "nextPageToken": ""}


async def test_an_edited_entry_breaks_the_chain(public_api: PublicApi, tmp_path: Path) -> None:
    base, who, _ = await _audited(public_api)
    tenant = base.rsplit("/", 1)[1]
    with sqlite3.connect(tmp_path / "context.db") as db:  # the in-process mesh's context store
        db.execute("DROP TRIGGER audit_logs_no_update")
        db.execute(
            "UPDATE audit_logs SET action = 'consent_granted' WHERE tenant_id = ? AND sequence = 4",
            (tenant,),
        )
    verified = await public_api.client.get(f"{base}/audit/verify", headers=who["admin"])
    assert verified.status_code == 200
    body = verified.json()
    assert (body["valid"], body["firstInvalidSequence"]) == (False, 4)
    assert "edited" in body["firstInvalidReason"]


@pytest.mark.parametrize("path", ["audit", "audit/verify"])
@pytest.mark.parametrize(("role", "title"), [("agent", "Forbidden"), ("user", "Forbidden")])
async def test_only_a_tenant_admin_reads_the_log(
    public_api: PublicApi, path: str, role: str, title: str
) -> None:
    base, who, _ = await _audited(public_api)
    reply = await public_api.client.get(f"{base}/{path}", headers=who[role])
    assert reply.status_code == 403
    assert reply.json()["title"] == title


@pytest.mark.parametrize("path", ["audit", "audit/verify"])
async def test_another_tenant_and_an_unknown_one_are_refused(
    public_api: PublicApi, path: str
) -> None:
    base, who, _ = await _audited(public_api)
    stranger = await public_api.client.get(f"{base}/{path}", headers=who["stranger"])
    assert stranger.status_code == 403
    assert stranger.json()["title"] == "Tenant mismatch"
    unknown = await public_api.client.get(
        f"/v2/tenants/nowhere/{path}", headers=roles(public_api, "nowhere")["platform"]
    )
    assert unknown.status_code == 404
    assert unknown.json()["reason"] == "TENANT_NOT_FOUND"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 1001}, "pageSize"),
        ({"pageToken": "x" * 19}, "pageToken"),
        ({"action": "consent granted"}, "action"),
        ({"correlationId": "bad id"}, "correlationId"),
        ({"sessionId": "-leading-dash"}, "sessionId"),
    ],
)
async def test_bad_parameters_are_400(
    public_api: PublicApi, params: dict[str, Any], field: str
) -> None:
    base, who, _ = await _audited(public_api)
    reply = await public_api.client.get(f"{base}/audit", headers=who["admin"], params=params)
    assert reply.status_code == 400
    assert [error["field"] for error in reply.json()["errors"]] == [field]


async def test_a_page_token_the_log_never_issued_is_400(public_api: PublicApi) -> None:
    base, who, _ = await _audited(public_api)
    reply = await public_api.client.get(
        f"{base}/audit", headers=who["admin"], params={"pageToken": "abc"}
    )
    assert reply.status_code == 400
    assert reply.json()["errors"] == [
        {"field": "page_token", "detail": "is not a token from this API"}
    ]
