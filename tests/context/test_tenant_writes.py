"""PutTenant: the write and its audit entry are one transaction on every store, and the context
service itself refuses an invalid configuration (the rules in services/mesh/tenant_rules.py,
shared with the gateway), naming each bad field once."""

import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from metaagent.common.v1 import tenant_pb2
from metaagent.context.v1 import audit_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from gateway.admin_models import ACTION_TYPES, SLOT_NAMES
from services.context.audit import Actor, AuditLog, user_reference
from services.context.cache import MemoryCache
from services.context.demo import demo_tenant
from services.context.sessions import ContextBook
from services.context.store import AuditFilters, SessionStore
from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import FieldViolation, MeshError, invalid_argument
from services.mesh.tenant_rules import KNOWN_ACTION_TYPES, tenant_config_violations
from services.mesh.tenant_rules import SLOT_NAMES as SHARED_SLOT_NAMES
from services.orchestrator.actions.registry import REGISTRY
from tests.support.calls import refusal
from tests.support.context_service import context_service


def _config(tenant: str = "", **changes: Any) -> tenant_pb2.TenantConfig:
    """A valid configuration (two intents, one following the other), then `changes`."""
    config = tenant_pb2.TenantConfig(
        tenant_id=tenant,
        name="Bici Norte",
        language="es",
        allowed_actions=["create_order", "handoff_human"],
        intents=[
            tenant_pb2.Intent(name="checkout", examples=["quiero comprar"]),
            tenant_pb2.Intent(
                name="confirm",
                follows=["checkout"],
                action_types=["create_order"],
                required_slots=["product", "size"],
                reply_templates={"en": "Done."},
            ),
        ],
        escalation_threshold=0.4,
        dedup_window_seconds=120,
        slot_prompts={"size": tenant_pb2.SlotPrompt(ask={"es": "¿Talla?"})},
    )
    for field, value in changes.items():
        if isinstance(value, list):
            config.ClearField(field)
            getattr(config, field).extend(value)
        else:
            setattr(config, field, value)
    return config


def _book(store: SessionStore) -> ContextBook:
    return ContextBook(store, MemoryCache(), ttl_seconds=60, recent_turns=5)


def _entry(action: str, entry_id: str = "") -> Any:
    def audit(created: bool) -> audit_pb2.AuditEntry:
        entry = audit_pb2.AuditEntry(action=action, entry_id=entry_id, actor="gateway")
        entry.payload.update({"created": created})
        return entry

    return audit


# --- the store port: one transaction --------------------------------------------------------


async def test_a_tenant_write_and_its_audit_entry_land_together(
    store: SessionStore, tenant: str
) -> None:
    created = await store.put_tenant(_config(tenant), _entry("tenant_configured"))
    assert (created.created, created.revision) == (True, 1)
    replaced = await store.put_tenant(_config(tenant, name="Bici Sur"), _entry("tenant_configured"))
    assert (replaced.created, replaced.revision) == (False, 2)
    assert (await store.get_tenant(tenant)).name == "Bici Sur"
    entries = await store.audit_entries(tenant, 0, 10, AuditFilters())
    assert [(e.action, e.payload["created"], e.actor) for e in entries] == [
        ("tenant_configured", True, "gateway"),
        ("tenant_configured", False, "gateway"),
    ]
    assert (await AuditLog(store).verify(tenant)).valid


async def test_a_tenant_write_whose_audit_entry_fails_writes_nothing(
    store: SessionStore, tenant: str
) -> None:
    """The audit entry is appended inside the write's transaction: when it cannot be stored
    (here a duplicate entry id), the configuration is not changed either."""
    await store.put_tenant(_config(tenant), _entry("tenant_configured", "entry-1"))
    with pytest.raises(MeshError) as refused:
        await store.put_tenant(
            _config(tenant, name="Never stored"), _entry("tenant_configured", "entry-1")
        )
    assert refused.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert (await store.get_tenant(tenant)).name == "Bici Norte"
    assert len(await store.audit_entries(tenant, 0, 10, AuditFilters())) == 1

    def unsealable(created: bool) -> audit_pb2.AuditEntry:
        raise invalid_argument(FieldViolation("payload", "cannot be built"))

    with pytest.raises(MeshError):
        await store.put_tenant(_config(f"{tenant}-new"), unsealable)
    assert await store.get_tenant(f"{tenant}-new") is None  # not created without its entry


# --- the book: audited with who acted, refused when invalid ---------------------------------


async def test_the_book_audits_a_tenant_write_with_who_made_it(
    store: SessionStore, tenant: str
) -> None:
    book = _book(store)
    boss = Actor("gateway", "platform-admin", "root")
    created = await book.put_tenant(tenant, _config(), correlation_id="corr-put", actor=boss)
    replaced = await book.put_tenant(
        tenant, _config(turns_per_minute=30), actor=Actor("gateway", "tenant-admin", "boss")
    )
    assert (created.created, replaced.created) == (True, False)
    first, second = await store.audit_entries(tenant, 0, 10, AuditFilters())
    assert (first.action, first.actor, first.correlation_id) == (
        "tenant_configured",
        "gateway",
        "corr-put",
    )
    stored = await store.get_tenant(tenant)
    digest = hashlib.sha256(stored.SerializeToString(deterministic=True)).hexdigest()
    assert dict(second.payload) | {"allowedActions": None} == {
        "created": False,
        "configSha256": digest,
        "allowedActions": None,
        "intents": 2,
        "escalationThreshold": 0.4,
        "dedupWindowSeconds": 120,
        "dailyTokenBudget": 0,
        "turnsPerMinute": 30,
        "byRole": "tenant-admin",
        "byRef": user_reference(tenant, "boss"),
    }
    assert list(second.payload["allowedActions"]) == ["create_order", "handoff_human"]
    assert (first.payload["created"], first.payload["byRole"]) == (True, "platform-admin")
    assert "root" not in str(first) and "boss" not in str(second)


async def test_an_invalid_configuration_is_refused_and_nothing_is_written(
    store: SessionStore, tenant: str
) -> None:
    book = _book(store)
    bad = _config(escalation_threshold=2.0, allowed_actions=["create_order", "teleport"])
    with pytest.raises(MeshError) as refused:
        await book.put_tenant(tenant, bad, actor=Actor("gateway"))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in refused.value.violations] == [
        "tenant.allowed_actions[1]",
        "tenant.escalation_threshold",
    ]
    assert await store.get_tenant(tenant) is None
    assert await store.audit_entries(tenant, 0, 10, AuditFilters()) == []


# --- the rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"tenant_id": "someone-else"}, ["tenant_id"]),
        ({"name": "   "}, ["name"]),
        ({"name": "x" * 201}, ["name"]),
        ({"language": "spanish!"}, ["language"]),
        ({"language": "es\n"}, ["language"]),
        ({"adn": "x" * 32_001}, ["adn"]),
        ({"safety_policy": "x" * 16_001}, ["safety_policy"]),
        ({"escalation_threshold": 1.5}, ["escalation_threshold"]),
        ({"escalation_threshold": -0.1}, ["escalation_threshold"]),
        ({"escalation_threshold": float("nan")}, ["escalation_threshold"]),
        ({"dedup_window_seconds": -1}, ["dedup_window_seconds"]),
        ({"dedup_window_seconds": 86_401}, ["dedup_window_seconds"]),
        ({"daily_token_budget": -5}, ["daily_token_budget"]),
        ({"turns_per_minute": -1}, ["turns_per_minute"]),
        ({"turns_per_minute": 100_001}, ["turns_per_minute"]),
        (
            {"allowed_actions": ["create_order", "handoff_human", "teleport"]},
            ["allowed_actions[2]"],
        ),
        (
            {"allowed_actions": ["create_order", "handoff_human", "create_order"]},
            ["allowed_actions"],
        ),
        ({"allowed_actions": ["handoff_human"]}, ["intents[1].action_types"]),
    ],
)
def test_each_bad_field_is_named_once(changes: dict[str, Any], fields: list[str]) -> None:
    violations = tenant_config_violations(_config(**changes), "acme")
    assert [v.field for v in violations] == fields


@pytest.mark.parametrize(
    ("intent", "fields"),
    [
        (tenant_pb2.Intent(name="bad name!"), ["intents[2].name"]),
        (tenant_pb2.Intent(name="checkout"), ["intents[2].name"]),
        (tenant_pb2.Intent(name="x", examples=["ok", "  "]), ["intents[2].examples[1]"]),
        (tenant_pb2.Intent(name="x", examples=["y" * 501]), ["intents[2].examples[0]"]),
        (tenant_pb2.Intent(name="x", reply_template="y" * 4001), ["intents[2].reply_template"]),
        (
            tenant_pb2.Intent(name="x", reply_templates={"english!": "hi"}),
            ['intents[2].reply_templates["english!"]'],
        ),
        (
            tenant_pb2.Intent(name="x", action_types=["teleport", "payment_link"]),
            ["intents[2].action_types[0]", "intents[2].action_types"],
        ),
        (tenant_pb2.Intent(name="x", required_slots=["shoe"]), ["intents[2].required_slots[0]"]),
        (tenant_pb2.Intent(name="x", follows=["x", "nowhere"]), ["intents[2].follows"]),
    ],
)
def test_each_bad_intent_field_is_named_once(intent: tenant_pb2.Intent, fields: list[str]) -> None:
    config = _config()
    config.intents.append(intent)
    assert [v.field for v in tenant_config_violations(config, "acme")] == fields


def test_slot_prompts_are_keyed_by_known_slots_and_languages() -> None:
    config = _config()
    config.slot_prompts["shoe_size"].ask["es"] = "?"
    config.slot_prompts["confirmation"].ask["es"] = "¿Confirmas?"
    config.slot_prompts["size"].invalid["xx_YY"] = "no"
    config.slot_prompts["product"].ask["en"] = "y" * 4001
    fields = {v.field for v in tenant_config_violations(config, "acme", prefix="tenant.")}
    assert fields == {
        'tenant.slot_prompts["shoe_size"]',
        'tenant.slot_prompts["size"].invalid["xx_YY"]',
        'tenant.slot_prompts["product"].ask["en"]',
    }


def test_several_problems_of_one_field_are_one_violation() -> None:
    config = _config(allowed_actions=["create_order", "handoff_human", "create_order"] * 22)
    [violation] = tenant_config_violations(config, "acme")
    assert violation.field == "allowed_actions"
    assert "at most 64" in violation.description and "twice" in violation.description


def test_valid_configurations_pass_and_the_lists_match_the_platform() -> None:
    assert tenant_config_violations(_config(), "acme") == []
    assert tenant_config_violations(_config("acme", language=""), "acme") == []
    assert tenant_config_violations(demo_tenant(), "demo") == []
    assert set(REGISTRY) == KNOWN_ACTION_TYPES  # the orchestrator's registry
    assert set(ACTION_TYPES) == KNOWN_ACTION_TYPES  # what the gateway's model accepts
    assert tuple(SLOT_NAMES) == SHARED_SLOT_NAMES


# --- over gRPC --------------------------------------------------------------------------------


async def test_put_tenant_over_grpc_is_audited_and_validated(
    state_dir: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as reach:
        gateway = MeshClients(reach, "gateway")
        stub = gateway.context
        call = correlation.CallContext(correlation_id="corr-tenant", tenant_id="acme")
        try:
            with correlation.bound(call):
                invalid = await refusal(
                    stub.PutTenant(
                        pb.PutTenantRequest(
                            tenant=_config(escalation_threshold=7.0, dedup_window_seconds=-1)
                        )
                    )
                )
                nothing = await refusal(stub.GetTenant(pb.GetTenantRequest()))
                malformed = await refusal(
                    stub.PutTenant(
                        pb.PutTenantRequest(
                            tenant=_config(), on_behalf_of=pb.Principal(role="Boss!", subject="")
                        )
                    )
                )
                created = await stub.PutTenant(
                    pb.PutTenantRequest(
                        tenant=_config(),
                        on_behalf_of=pb.Principal(role="platform-admin", subject="root"),
                    )
                )
                anonymous = await stub.PutTenant(pb.PutTenantRequest(tenant=_config(name="B")))
                listed = await stub.ListAudit(pb.ListAuditRequest())
        finally:
            await gateway.close()
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in invalid.violations] == [
        "tenant.escalation_threshold",
        "tenant.dedup_window_seconds",
    ]
    assert nothing.code == grpc.StatusCode.NOT_FOUND  # the refused write stored nothing
    assert [v.field for v in malformed.violations] == [
        "on_behalf_of.role",
        "on_behalf_of.subject",
    ]
    assert (created.created, anonymous.created) == (True, False)
    first, second = listed.entries
    assert (first.action, first.actor, first.correlation_id) == (
        "tenant_configured",
        "gateway",
        "corr-tenant",
    )
    assert first.payload["byRole"] == "platform-admin"
    assert first.payload["byRef"] == user_reference("acme", "root")
    assert (second.actor, second.payload["created"]) == ("gateway", False)
    assert "byRole" not in second.payload  # no person named: the service alone acted
