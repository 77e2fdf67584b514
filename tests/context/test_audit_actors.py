"""Every audit entry names who acted: the calling service (its mTLS identity, like AppendAudit's
entries) and, when that service acts for a person, the person's role and a non-reversible
reference (never the subject itself) -- for consent changes and erasures, on every store."""

from pathlib import Path

import grpc
from metaagent.context.v1 import consent_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.context.audit import Actor, AuditLog, user_reference
from services.context.cache import MemoryCache
from services.context.consents import ConsentBook
from services.context.store import AuditFilters, SessionStore
from services.mesh import correlation
from services.mesh.clients import MeshClients
from tests.support.calls import refusal
from tests.support.context_service import context_service

VOICE = consent_pb2.CONSENT_KIND_VOICE_RECORDING


async def test_consent_and_erasure_entries_name_the_service_and_the_person(
    store: SessionStore, tenant: str
) -> None:
    consents = ConsentBook(store, MemoryCache(), AuditLog(store))
    admin = Actor("gateway", "tenant-admin", "boss")
    await consents.grant(tenant, "alice", [VOICE], "ivr_prompt", "c-1", actor=admin)
    await consents.revoke(tenant, "alice", [], "c-2", actor=Actor("orchestrator"))
    await consents.erase(tenant, "alice", "c-3", actor=admin)
    entries = await store.audit_entries(tenant, 0, 10, AuditFilters())
    assert [(e.action, e.actor) for e in entries] == [
        ("consent_granted", "gateway"),
        ("consent_revoked", "orchestrator"),
        ("user_erased", "gateway"),
    ]
    boss = user_reference(tenant, "boss")
    assert [e.payload["byRef"] for e in (entries[0], entries[2])] == [boss, boss]
    assert entries[0].payload["byRole"] == "tenant-admin"
    assert "byRole" not in entries[1].payload  # the service acted for no one it named
    assert "boss" not in str(entries) and "alice" not in str(entries)
    assert (await AuditLog(store).verify(tenant)).valid


async def test_over_grpc_the_actor_is_the_callers_identity(state_dir: Path, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as reach:
        gateway, orchestrator = MeshClients(reach, "gateway"), MeshClients(reach, "orchestrator")
        as_user = pb.Principal(role="user", subject="alice")
        call = correlation.CallContext(correlation_id="corr-actor", tenant_id="demo")
        try:
            with correlation.bound(call):
                await gateway.context.GrantConsent(
                    pb.GrantConsentRequest(user_id="alice", kinds=[VOICE], on_behalf_of=as_user)
                )
                await orchestrator.context.RevokeConsent(pb.RevokeConsentRequest(user_id="alice"))
                malformed = [
                    await refusal(
                        gateway.context.GrantConsent(
                            pb.GrantConsentRequest(
                                user_id="alice",
                                kinds=[VOICE],
                                on_behalf_of=pb.Principal(role="user", subject=""),
                            )
                        )
                    ),
                    await refusal(
                        gateway.context.RevokeConsent(
                            pb.RevokeConsentRequest(
                                user_id="alice", on_behalf_of=pb.Principal(subject="x")
                            )
                        )
                    ),
                    await refusal(
                        gateway.context.EraseUser(
                            pb.EraseUserRequest(
                                user_id="alice",
                                on_behalf_of=pb.Principal(role="x" * 33, subject="x" * 1025),
                            )
                        )
                    ),
                ]
                still = await gateway.context.GetConsent(pb.GetConsentRequest(user_id="alice"))
                await gateway.context.EraseUser(
                    pb.EraseUserRequest(
                        user_id="alice",
                        on_behalf_of=pb.Principal(role="tenant-admin", subject="boss"),
                    )
                )
                listed = await gateway.context.ListAudit(pb.ListAuditRequest())
        finally:
            await gateway.close()
            await orchestrator.close()
    entries = [(e.action, e.actor, dict(e.payload).get("byRole")) for e in listed.entries]
    assert entries == [
        ("consent_granted", "gateway", "user"),
        ("consent_revoked", "orchestrator", None),
        ("user_erased", "gateway", "tenant-admin"),
    ]
    granted = listed.entries[0].payload
    assert granted["byRef"] == granted["userRef"] == user_reference("demo", "alice")
    assert [[v.field for v in refusal.violations] for refusal in malformed] == [
        ["on_behalf_of.subject"],
        ["on_behalf_of.role"],
        ["on_behalf_of.role", "on_behalf_of.subject"],
    ]
    assert {refusal.code for refusal in malformed} == {grpc.StatusCode.INVALID_ARGUMENT}
    assert still.consent.user_id == "alice"  # the refused erasure erased nothing
    assert still.consent.revoked_date.seconds > 0
