"""Consent (voice recording, data learning) and erasure of one user's data, each audited.

Audit entries name the user only by a tenant-scoped reference (a hash), never the raw id, so
the append-only log keeps no personal data that erasure would have to remove. Each entry names
who acted (`Actor`): the calling service, and the person it acted for by role and reference.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import struct_pb2
from metaagent.context.v1 import consent_pb2

from services.context.audit import NO_ACTOR, Actor, AuditLog, user_reference
from services.context.cache import SessionCache
from services.context.sessions import cache_key
from services.context.store import ConsentChange, Erasure, SessionStore
from services.mesh.errors import FieldViolation, invalid_argument

KIND_NAMES: dict[int, str] = {
    consent_pb2.CONSENT_KIND_VOICE_RECORDING: "voice_recording",
    consent_pb2.CONSENT_KIND_DATA_LEARNING: "data_learning",
}
MAX_USER_ID = 128


class StoredReplies(Protocol):
    """Where replies are kept for idempotent replay (the idempotency claims)."""

    async def forget(self, tenant_id: str, keys: Sequence[str]) -> int:
        """Drop the records of `keys`, whatever their state; how many there were."""


def _user(user_id: str) -> str:
    if not user_id or len(user_id) > MAX_USER_ID or not user_id.isprintable():
        raise invalid_argument(
            FieldViolation("user_id", f"must be 1-{MAX_USER_ID} printable characters")
        )
    return user_id


def _kinds(kinds: list[int], *, required: bool) -> set[str]:
    if required and not kinds:
        raise invalid_argument(FieldViolation("kinds", "at least one kind is required"))
    unknown = [kind for kind in kinds if kind not in KIND_NAMES]
    if unknown:
        raise invalid_argument(FieldViolation("kinds", "must be voice recording or data learning"))
    return {KIND_NAMES[kind] for kind in kinds} if kinds else set(KIND_NAMES.values())


def _payload(**values: Any) -> struct_pb2.Struct:
    payload = struct_pb2.Struct()
    payload.update(values)
    return payload


class ConsentBook:
    def __init__(self, store: SessionStore, cache: SessionCache, audit: AuditLog) -> None:
        self._store = store
        self._cache = cache
        self._audit = audit

    async def get(self, tenant_id: str, user_id: str) -> consent_pb2.UserConsent:
        """The user's consent; no record means no consent (both flags false)."""
        found = await self._store.get_consent(tenant_id, _user(user_id))
        return found or consent_pb2.UserConsent(user_id=user_id, tenant_id=tenant_id)

    async def grant(
        self,
        tenant_id: str,
        user_id: str,
        kinds: list[int],
        source: str,
        correlation_id: str,
        *,
        actor: Actor = NO_ACTOR,
    ) -> consent_pb2.UserConsent:
        names = _kinds(kinds, required=True)
        return await self._change(
            tenant_id,
            _user(user_id),
            names,
            granted=True,
            source=source,
            correlation_id=correlation_id,
            actor=actor,
        )

    async def revoke(
        self,
        tenant_id: str,
        user_id: str,
        kinds: list[int],
        correlation_id: str,
        *,
        actor: Actor = NO_ACTOR,
    ) -> consent_pb2.UserConsent:
        names = _kinds(kinds, required=False)
        return await self._change(
            tenant_id,
            _user(user_id),
            names,
            granted=False,
            source="",
            correlation_id=correlation_id,
            actor=actor,
        )

    async def _change(
        self,
        tenant_id: str,
        user_id: str,
        names: set[str],
        *,
        granted: bool,
        source: str,
        correlation_id: str,
        actor: Actor,
    ) -> consent_pb2.UserConsent:
        now = datetime.now(UTC)
        change = ConsentChange(
            voice_recording=granted if "voice_recording" in names else None,
            data_learning=granted if "data_learning" in names else None,
            granted_at=now if granted else None,
            revoked_at=None if granted else now,
        )
        consent = await self._store.change_consent(tenant_id, user_id, change)
        await self._audit.append(
            tenant_id,
            "consent_granted" if granted else "consent_revoked",
            _payload(
                userRef=user_reference(tenant_id, user_id),
                kinds=sorted(names),
                source=source,
                **actor.details(tenant_id),
            ),
            correlation_id=correlation_id,
            actor=actor.service,
        )
        return consent

    async def erase(
        self,
        tenant_id: str,
        user_id: str,
        correlation_id: str,
        *,
        actor: Actor = NO_ACTOR,
        replies: StoredReplies | None = None,
    ) -> Erasure:
        """Delete the user's sessions, turns, entities, queued hand-overs and consent; drop
        them from the cache, and (with `replies`) the stored replies of their turns, which hold
        the customer's text and the agent's answer until the dedup window ends. The audit entry
        counts the hand-overs (`handoffs`) when there were some.

        Cached copies and stored replies are dropped before the store erase (so a retry knows
        them) and again after it (the cache bumping their generation, so a reader that loaded
        before the erase cannot put them back; the replies of a turn committed meanwhile). An
        outage of the cache or the replies' backend makes the erasure fail with UNAVAILABLE,
        before the store is touched when it is down from the start; it is idempotent."""
        user_id = _user(user_id)
        keys = [cache_key(tenant_id, s) for s in await self._store.sessions_of(tenant_id, user_id)]
        for key in keys:
            await self._cache.delete(key, required=True)
        forgotten = 0
        if replies is not None:
            known = await self._store.correlation_ids_of(tenant_id, user_id)
            forgotten += await replies.forget(tenant_id, known)
        erasure = await self._store.erase_user(tenant_id, user_id)
        for key in keys:
            await self._cache.delete(key, required=True)
        if replies is not None and erasure.correlation_ids:
            forgotten += await replies.forget(tenant_id, erasure.correlation_ids)
        counts: dict[str, Any] = {"replies": forgotten} if replies is not None else {}
        if erasure.handoffs:
            counts["handoffs"] = erasure.handoffs
        await self._audit.append(
            tenant_id,
            "user_erased",
            _payload(
                userRef=user_reference(tenant_id, user_id),
                sessions=len(erasure.session_ids),
                turns=erasure.turns,
                consent=erasure.consent,
                **counts,
                **actor.details(tenant_id),
            ),
            correlation_id=correlation_id,
            actor=actor.service,
        )
        return erasure
