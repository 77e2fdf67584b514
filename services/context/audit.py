"""The tamper-evident audit log: entries hash-chained per tenant, and the verifier.

Each entry stores the previous entry's hash and its own SHA-256 over a canonical JSON form of
its content (sorted keys, no whitespace, microsecond UTC timestamp). Editing an entry breaks its
hash; deleting or reordering entries breaks the sequence or the links. `verify` walks a tenant's
chain in order and reports the first entry that does not hold.
"""

import hashlib
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import json_format, struct_pb2
from metaagent.context.v1 import audit_pb2

from services.context.store import AuditFilters, page_start
from services.mesh.errors import FieldViolation, invalid_argument

GENESIS_HASH = "0" * 64
ROLE_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")
MAX_SUBJECT_CHARS = 1024


def user_reference(tenant_id: str, user_id: str) -> str:
    """A stable, non-reversible reference to a person, for audit entries."""
    return hashlib.sha256(f"{tenant_id}:{user_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Actor:
    """Who made a change: the calling service (its mTLS identity, the entry's `actor`) and,
    when it acted for a person, that person's role and subject. The subject is never stored:
    entries keep the role and a tenant-scoped reference to it (`byRole`, `byRef`)."""

    service: str = ""
    role: str = ""
    subject: str = ""

    def details(self, tenant_id: str) -> dict[str, str]:
        """The payload fields naming the person, if any."""
        if not self.role:
            return {}
        return {"byRole": self.role, "byRef": user_reference(tenant_id, self.subject)}


NO_ACTOR = Actor()
"""No one named: the default of calls made without a caller (tests, tools)."""


def principal_violations(role: str, subject: str, field: str) -> list[FieldViolation]:
    """What is wrong with a principal a calling service names (both parts are required)."""
    violations = []
    if not ROLE_PATTERN.fullmatch(role):
        violations.append(
            FieldViolation(f"{field}.role", "must be 1-32 of [a-z0-9-], starting with a letter")
        )
    if not subject or len(subject) > MAX_SUBJECT_CHARS:
        violations.append(
            FieldViolation(f"{field}.subject", f"must be 1-{MAX_SUBJECT_CHARS} characters")
        )
    return violations


def canonical(entry: audit_pb2.AuditEntry) -> bytes:
    """The bytes an entry's hash covers (everything but the hash itself)."""
    instant = entry.timestamp.ToDatetime(UTC).isoformat(timespec="microseconds")
    content: dict[str, Any] = {
        "tenantId": entry.tenant_id,
        "sequence": entry.sequence,
        "entryId": entry.entry_id,
        "correlationId": entry.correlation_id,
        "actor": entry.actor,
        "action": entry.action,
        "sessionId": entry.session_id,
        "payload": json_format.MessageToDict(entry.payload),
        "timestamp": instant,
        "prevHash": entry.prev_hash,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_payload(payload: struct_pb2.Struct) -> struct_pb2.Struct:
    """The payload with numbers every store keeps as written: -0.0 becomes 0.0 (jsonb drops
    the sign) and NaN or infinities, which JSON cannot carry, are refused."""

    def clean(value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise invalid_argument(FieldViolation("payload", "text must not contain NUL"))
        if isinstance(value, float):
            if math.isnan(value) or math.isinf(value):
                raise invalid_argument(
                    FieldViolation("payload", "numbers must be finite (no NaN or infinity)")
                )
            return value + 0.0
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    try:
        values = json_format.MessageToDict(payload)
    except ValueError:
        raise invalid_argument(
            FieldViolation("payload", "numbers must be finite (no NaN or infinity)")
        ) from None
    cleaned = struct_pb2.Struct()
    cleaned.update(clean(values))
    return cleaned


def seal(entry: audit_pb2.AuditEntry, sequence: int, prev_hash: str, now: datetime) -> None:
    """Place `entry` after the chain head: sequence, previous hash, timestamp, own hash."""
    entry.sequence = sequence
    entry.prev_hash = prev_hash
    entry.timestamp.FromDatetime(now)
    entry.hash = hashlib.sha256(canonical(entry)).hexdigest()


def new_audit_entry(
    tenant_id: str, entry: audit_pb2.AuditEntry, head: Mapping[str, Any] | None
) -> audit_pb2.AuditEntry:
    """A copy of `entry` sealed after `head` (the chain's last `sequence` and `hash`, or None)."""
    sealed = audit_pb2.AuditEntry()
    sealed.CopyFrom(entry)
    sealed.tenant_id = tenant_id
    sealed.entry_id = sealed.entry_id or str(uuid.uuid4())
    sequence = int(head["sequence"]) + 1 if head else 1
    seal(sealed, sequence, str(head["hash"]) if head else GENESIS_HASH, datetime.now(UTC))
    return sealed


@dataclass(frozen=True)
class Verdict:
    valid: bool
    entries_checked: int
    first_invalid_sequence: int = 0
    reason: str = ""
    head_hash: str = ""


async def verify(entries: AsyncIterator[audit_pb2.AuditEntry]) -> Verdict:
    """Walk a chain in sequence order; stop at the first entry that does not hold."""
    expected_sequence, previous, checked = 1, GENESIS_HASH, 0
    async for entry in entries:
        checked += 1
        problem = ""
        if entry.sequence != expected_sequence:
            problem = (
                f"sequence gap: expected {expected_sequence}, found {entry.sequence} "
                "(an entry was deleted or reordered)"
            )
        elif entry.prev_hash != previous:
            problem = "broken link: prev_hash does not match the previous entry"
        elif hashlib.sha256(canonical(entry)).hexdigest() != entry.hash:
            problem = "hash mismatch: the entry was edited"
        if problem:
            return Verdict(False, checked, expected_sequence, problem, previous)
        expected_sequence, previous = expected_sequence + 1, entry.hash
    return Verdict(True, checked, head_hash="" if checked == 0 else previous)


ACTION_PATTERN = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
VERIFY_BATCH = 500
MAX_PAGE = 1000


def audit_entry(
    action: str,
    payload: struct_pb2.Struct,
    *,
    session_id: str = "",
    correlation_id: str = "",
    actor: str = "",
) -> audit_pb2.AuditEntry:
    """An entry to append, its action and payload checked (INVALID_ARGUMENT otherwise)."""
    if not ACTION_PATTERN.match(action):
        raise invalid_argument(
            FieldViolation("action", "must be 1-64 of [a-z0-9_.], starting with a letter")
        )
    return audit_pb2.AuditEntry(
        action=action,
        payload=canonical_payload(payload),
        session_id=session_id,
        correlation_id=correlation_id,
        actor=actor,
    )


class AuditLog:
    """Appending, listing and verifying one tenant's chain at a time."""

    def __init__(self, store: "AuditStore") -> None:
        self._store = store

    async def append(
        self,
        tenant_id: str,
        action: str,
        payload: struct_pb2.Struct,
        *,
        session_id: str = "",
        correlation_id: str = "",
        actor: str = "",
    ) -> audit_pb2.AuditEntry:
        entry = audit_entry(
            action, payload, session_id=session_id, correlation_id=correlation_id, actor=actor
        )
        return await self._store.append_audit(tenant_id, entry)

    async def page(
        self, tenant_id: str, page_size: int, page_token: str, filters: AuditFilters
    ) -> tuple[list[audit_pb2.AuditEntry], str]:
        after = page_start(page_size, page_token)
        size = min(page_size or 100, MAX_PAGE)
        entries = await self._store.audit_entries(tenant_id, after, size + 1, filters)
        more = len(entries) > size
        entries = entries[:size]
        return entries, str(entries[-1].sequence) if more and entries else ""

    async def verify(self, tenant_id: str) -> Verdict:
        async def chain() -> AsyncIterator[audit_pb2.AuditEntry]:
            after = 0
            while batch := await self._store.audit_entries(
                tenant_id, after, VERIFY_BATCH, AuditFilters()
            ):
                for entry in batch:
                    yield entry
                after = batch[-1].sequence

        return await verify(chain())


class AuditStore(Protocol):
    async def append_audit(
        self, tenant_id: str, entry: audit_pb2.AuditEntry
    ) -> audit_pb2.AuditEntry: ...

    async def audit_entries(
        self, tenant_id: str, after_sequence: int, limit: int, filters: AuditFilters
    ) -> list[audit_pb2.AuditEntry]: ...
