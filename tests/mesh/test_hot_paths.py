"""The shortcuts of the per-call paths give what the general code they replace gives:
Struct to dict, bindings, forwarded metadata, label children, peer identities."""

import contextvars
import math
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from prometheus_client import CollectorRegistry, Counter

from services.mesh import correlation, interceptors
from services.mesh.freeform import struct_to_dict
from services.mesh.metrics import Children

VALUES: dict[str, Any] = {
    "text": "zapatilla ñ €",
    "integral": 3,
    "fraction": 189.99,
    "negative_zero": -0.0,
    "yes": True,
    "no": False,
    "nothing": None,
    "list": [1, "a", None, True, [], [[2]], {"k": [{"deep": {"er": 1.5}}]}],
    "object": {"nested": {"empty": {}, "list": []}},
    "empty_list": [],
    "empty_object": {},
}


def test_struct_to_dict_is_message_to_dict() -> None:
    struct = struct_pb2.Struct()
    struct.update(VALUES)
    struct.fields["unset"].CopyFrom(struct_pb2.Value())  # a Value with no kind: null
    expected = json_format.MessageToDict(struct)
    found = struct_to_dict(struct)
    assert found == expected
    assert list(found) == list(expected)
    assert repr(found) == repr(expected)  # the same types (floats, not ints), the same order
    assert struct_to_dict(struct_pb2.Struct()) == {}


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_struct_to_dict_refuses_what_message_to_dict_refuses(number: float) -> None:
    struct = struct_pb2.Struct()
    struct.fields["bad"].list_value.values.add().number_value = number
    with pytest.raises(ValueError, match="Fail to serialize") as general:
        json_format.MessageToDict(struct)
    with pytest.raises(ValueError, match="Fail to serialize") as fast:
        struct_to_dict(struct)
    assert str(fast.value) == str(general.value)


def test_bound_attach_and_detach() -> None:
    call = correlation.CallContext(correlation_id="c-1", tenant_id="demo")
    with correlation.bound(call) as entered:
        assert entered is call
        assert correlation.current() is call
        token = correlation.attach(correlation.CallContext(correlation_id="c-2"))
        assert correlation.current().correlation_id == "c-2"
        correlation.detach(token)
        assert correlation.current() is call
    assert correlation.current() == correlation.CallContext()
    with pytest.raises(RuntimeError), correlation.bound(call):
        raise RuntimeError("propagates")
    assert correlation.current() == correlation.CallContext()
    token = correlation.attach(call)
    contextvars.copy_context().run(correlation.detach, token)  # another context: no error
    correlation.detach(token)
    assert correlation.current() == correlation.CallContext()


def test_forwarded_metadata() -> None:
    call = correlation.CallContext(correlation_id="c-1", tenant_id="demo", traceparent="")
    assert call.forwarded == (("x-correlation-id", "c-1"), ("x-tenant-id", "demo"))
    assert call == correlation.CallContext(correlation_id="c-1", tenant_id="demo")


def test_children_are_the_metric_children() -> None:
    counter = Counter("hot_path_total", "test", ["a", "b"], registry=CollectorRegistry())
    children = Children(counter)
    children("x", "y").inc()
    children("x", "y").inc(2)
    assert children("x", "y") is counter.labels("x", "y")
    assert counter.labels("x", "y")._value.get() == 3


class _Peer:
    def __init__(self, key: str, names: list[bytes]) -> None:
        self._key, self._names = key, names

    def peer_identity_key(self) -> str:
        return self._key

    def peer_identities(self) -> list[bytes]:
        return self._names


def test_peer_identities_are_remembered_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interceptors, "PEER_IDENTITIES_KEPT", 2)
    monkeypatch.setattr(interceptors, "_PEER_IDENTITIES", {})
    san = interceptors.SAN_PROPERTY
    peer = _Peer(san, [b"spiffe://metaagent.local/context", b"DNS:context"])
    assert interceptors.peer_identity(peer) == "context"  # type: ignore[arg-type]
    assert interceptors.peer_identity(peer) == "context"  # type: ignore[arg-type]
    two = _Peer(san, [b"spiffe://metaagent.local/llm", b"spiffe://metaagent.local/context"])
    assert interceptors.peer_identity(two) is None  # type: ignore[arg-type]
    assert interceptors.peer_identity(_Peer(san, [b"spiffe://other/llm"])) is None  # type: ignore[arg-type]
    assert len(interceptors._PEER_IDENTITIES) <= 2
    assert interceptors.peer_identity(_Peer("x509_common_name", [b"x"])) is None  # type: ignore[arg-type]
