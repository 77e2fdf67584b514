"""Turn and action ids: `turn_id` spells out uuid5 without the UUID object; the ids must stay
exactly uuid5's (a retry finds its committed turn by them)."""

import uuid

from services.mesh import correlation
from services.orchestrator.turn import ID_NAMESPACE, turn_id


def test_turn_ids_are_uuid5() -> None:
    for tenant, session, correlation_id in (
        ("demo", "s-1", str(uuid.uuid4())),
        ("t-ñ", "sesión", "c:1.2_3"),
        ("", "", ""),
    ):
        call = correlation.CallContext(correlation_id=correlation_id, tenant_id=tenant)
        for part in ("user", "agent", "action/0", "action/17"):
            name = f"{tenant}/{session}/{correlation_id}/{part}"
            assert turn_id(call, session, part) == str(uuid.uuid5(ID_NAMESPACE, name))
