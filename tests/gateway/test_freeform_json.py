"""Free-form JSON (a turn's `input.metadata` and `contextHints`, document `metadata`, catalogue
attributes, a human agent's action `params`) held to what a protobuf Struct carries
(services/mesh/freeform.py): 400 problem+json naming the field, never a 500 or a request left
without an answer; and a failure inside the BulkIngest stream answered as a problem."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.orchestrator.v1 import orchestrator_service_pb2 as orchestrator_pb
from metaagent.retrieval.v1 import retrieval_service_pb2 as retrieval_pb
from pydantic import ValidationError

from gateway.models import AgentReply
from gateway.routes import knowledge
from services.mesh.catalogue import CatalogueCheck, parse_catalogue
from services.mesh.freeform import MAX_DEPTH, MAX_SAFE_INTEGER, freeform_problem
from tests.gateway.test_tenants_api import NDJSON, PRODUCTS, create_tenant, new_tenant, roles
from tests.support.public_api import PublicApi

PROCESS = "/v2/agents/meta-agent/process"


def nested(levels: int, leaf: Any = 1, in_lists: bool = False) -> Any:
    """`levels` objects (or arrays) one inside the other around `leaf`."""
    value = leaf
    for _ in range(levels):
        value = [value] if in_lists else {"x": value}
    return value


# --- the validator -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"a": None, "b": True, "c": "texto", "d": [1, 2.5, -3], "e": {"f": []}},
        {"big": MAX_SAFE_INTEGER, "small": -MAX_SAFE_INTEGER, "float": 1e308},
        nested(MAX_DEPTH),
        nested(MAX_DEPTH, in_lists=True),
    ],
    ids=["empty", "every-type", "limits", "deepest-objects", "deepest-arrays"],
)
def test_what_a_struct_carries_passes(value: Any) -> None:
    assert freeform_problem(value) is None
    struct = struct_pb2.Struct()
    struct.update({"value": value})
    assert struct_pb2.Struct.FromString(struct.SerializeToString()) == struct


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        (nested(MAX_DEPTH + 1), "x." * 31 + "x", "nested deeper than 32 levels"),
        (nested(MAX_DEPTH + 1, in_lists=True), "[0]" * 32, "nested deeper"),
        ({"n": MAX_SAFE_INTEGER + 1}, "n", "integer beyond ±2^53"),
        ({"n": [1, {"m": -(10**400)}]}, "n[1].m", "integer beyond ±2^53"),
        ({"n": float("nan")}, "n", "not a finite number"),
        ({"n": float("inf")}, "n", "not a finite number"),
        ({"n": -float("inf")}, "n", "not a finite number"),
        ({"s": "\ud800"}, "s", "not valid Unicode"),
        ({"\udfff": 1}, "", "key that is not valid Unicode"),
        ({"b": b"bytes"}, "b", "not a JSON value"),
    ],
    ids=[
        "33-objects",
        "33-arrays",
        "2^53+1",
        "400-digits",
        "NaN",
        "Infinity",
        "-Infinity",
        "lone-surrogate",
        "lone-surrogate-key",
        "not-json",
    ],
)
def test_what_a_struct_cannot_carry_is_named(value: Any, path: str, reason: str) -> None:
    problem = freeform_problem(value)
    assert problem is not None
    assert problem.path == path and reason in problem.reason


def test_any_depth_is_examined_without_recursion() -> None:
    problem = freeform_problem(nested(100_000))
    assert problem is not None and "deeper" in problem.reason
    assert len(problem.path) <= 121, "the path is cut short"


def deepest_messages(value: dict[str, Any]) -> list[Any]:
    """The contract messages that carry a free-form value furthest down."""
    struct = struct_pb2.Struct()
    struct.update(value)
    document = retrieval_pb.Document(metadata=retrieval_pb.DocumentMetadata(fields=struct))
    return [
        orchestrator_pb.ProcessRequest(input=orchestrator_pb.Input(metadata=struct)),
        orchestrator_pb.SubmitHumanReplyRequest(actions=[conversation_pb2.Action(params=struct)]),
        retrieval_pb.BulkIngestRequest(product=retrieval_pb.Product(attributes=struct)),
        retrieval_pb.UpsertDocumentsRequest(documents=[document]),
        retrieval_pb.SearchResponse(hits=[retrieval_pb.SearchHit(document=document)]),
        llm_pb.GenerateRequest(
            prompt=llm_pb.Prompt(documents=[llm_pb.RetrievedDocument(fields=struct)])
        ),
        llm_pb.GenerateRequest(
            prompt=llm_pb.Prompt(
                recent_turns=[
                    conversation_pb2.ConversationTurn(
                        actions=[conversation_pb2.Action(params=struct)]
                    )
                ]
            )
        ),
    ]


def test_the_deepest_value_allowed_survives_every_message_that_carries_it() -> None:
    """MAX_DEPTH is what protobuf's parser (depth limit 100) still reads back in the deepest
    message; a contract change that nests these values further fails here first."""
    for message in deepest_messages(nested(MAX_DEPTH)):
        assert type(message).FromString(message.SerializeToString()) == message


def test_an_agents_action_params_are_held_to_the_same_rules() -> None:
    reply = {"type": "reply", "sessionId": "s-1", "text": "hola"}
    AgentReply.model_validate(reply | {"actions": [{"type": "x", "params": {"n": 1}}]})
    with pytest.raises(ValidationError) as refused:
        AgentReply.model_validate(reply | {"actions": [{"type": "x", "params": nested(40)}]})
    assert refused.value.errors()[0]["loc"] == ("actions", 0, "params")


def test_catalogue_attributes_are_held_to_the_same_rules() -> None:
    line = {"id": "p", "name": "P", "price": "1.00", "currency": "EUR"}
    bad = [
        json.dumps(line | {"deep": nested(MAX_DEPTH)}),  # the line itself is the first level
        json.dumps(line | {"n": 2**60}),
        json.dumps(line | {"n": 10**400}),
        json.dumps(line)[:-1] + ', "n": 1e400}',  # a finite literal, infinite as a double
        json.dumps(line | {"ok": nested(MAX_DEPTH - 1)}),
    ]
    parsed = list(parse_catalogue(bad))
    assert [p.product is None for p in parsed] == [True, True, True, True, False]
    assert parsed[0].error.startswith("attribute deep.x") and "deeper than 32" in parsed[0].error
    assert "±2^53" in parsed[1].error and "±2^53" in parsed[2].error
    assert "finite" in parsed[3].error


# --- through the gateway -------------------------------------------------------------------


def raw(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as JavaScript writes them


UNCARRIABLE = [
    pytest.param({"n": 10**400}, "±2^53", id="400-digit-integer"),
    pytest.param({"n": 2**53 + 1}, "±2^53", id="past-2^53"),
    pytest.param(nested(120), "deeper than 32", id="120-deep"),
    pytest.param({"n": float("nan")}, "finite", id="NaN"),
    pytest.param({"n": float("inf")}, "finite", id="Infinity"),
    pytest.param({"n": -float("inf")}, "finite", id="-Infinity"),
]


@pytest.mark.parametrize(("value", "reason"), UNCARRIABLE)
@pytest.mark.parametrize("field", ["input.metadata", "contextHints"])
async def test_a_turn_with_uncarriable_free_form_json_is_400(
    public_api: PublicApi, value: Any, reason: str, field: str
) -> None:
    tenant = new_tenant()
    await create_tenant(public_api, tenant)
    body: dict[str, Any] = {
        "tenantId": tenant,
        "sessionId": "chat-1",
        "channel": "web",
        "input": {"type": "text", "text": "hola"},
    }
    if field == "contextHints":
        body["contextHints"] = value
    else:
        body["input"]["metadata"] = value
    headers = roles(public_api, tenant)["user"] | {"Content-Type": "application/json"}
    reply = await public_api.client.post(PROCESS, headers=headers, content=raw(body))
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    [error] = reply.json()["errors"]
    assert error["field"] == field and reason in error["detail"]
    session = await public_api.client.get(
        f"/v2/tenants/{tenant}/sessions/chat-1", headers=roles(public_api, tenant)["agent"]
    )
    assert session.status_code == 404, "no turn reached the orchestrator"


async def test_free_form_json_a_struct_carries_is_answered(public_api: PublicApi) -> None:
    tenant = new_tenant()
    await create_tenant(public_api, tenant)
    meta = {"deep": nested(MAX_DEPTH - 1), "n": -(2**53), "x": 0.5}
    body = {
        "tenantId": tenant,
        "sessionId": "chat-1",
        "channel": "web",
        "input": {"type": "text", "text": "hola", "metadata": meta},
        "contextHints": meta,
    }
    headers = roles(public_api, tenant)["user"]
    reply = await public_api.client.post(PROCESS, headers=headers, json=body)
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("value", "reason"), UNCARRIABLE)
async def test_a_document_with_uncarriable_metadata_is_400(
    public_api: PublicApi, value: Any, reason: str
) -> None:
    tenant = new_tenant()
    await create_tenant(public_api, tenant)
    documents = [
        {"docId": "faq-1", "text": "Abrimos de 9 a 18."},
        {"docId": "faq-2", "text": "Envíos en 48 horas.", "metadata": value},
    ]
    headers = roles(public_api, tenant)["admin"] | {"Content-Type": "application/json"}
    reply = await public_api.client.post(
        f"/v2/tenants/{tenant}/knowledge", headers=headers, content=raw(documents)
    )
    assert reply.status_code == 400, reply.text
    [error] = reply.json()["errors"]
    assert error["field"] == "1.metadata" and reason in error["detail"]


@pytest.mark.parametrize(
    ("attribute", "reason"),
    [
        pytest.param(nested(120), "deeper than 32", id="120-deep"),
        pytest.param(nested(MAX_DEPTH), "deeper than 32", id="33-with-the-line"),
        pytest.param(10**400, "±2^53", id="400-digit-integer"),
        pytest.param(float("nan"), "not a JSON number", id="NaN"),
    ],
)
async def test_a_catalogue_line_with_uncarriable_attributes_is_400_naming_it(
    public_api: PublicApi, attribute: Any, reason: str
) -> None:
    """A 120-deep attribute used to fail inside BulkIngest's request stream: the call was
    cancelled and the client got no answer at all."""
    tenant = new_tenant()
    await create_tenant(public_api, tenant)
    lines = [json.dumps(PRODUCTS[0]), json.dumps(PRODUCTS[1] | {"extra": attribute})]
    reply = await asyncio.wait_for(
        public_api.client.post(
            f"/v2/tenants/{tenant}/knowledge",
            headers=roles(public_api, tenant)["admin"] | NDJSON,
            content="\n".join(lines),
        ),
        timeout=20,
    )
    assert reply.status_code == 400, reply.text
    [error] = reply.json()["errors"]
    assert error["field"] == "line 2" and reason in error["detail"]


# --- a failure inside the BulkIngest stream ------------------------------------------------


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The catalogue's products as the route will stream them, bypassing the parser's checks
    (as a product they missed would)."""
    products: list[Any] = []
    monkeypatch.setattr(
        knowledge, "check_catalogue", lambda *_args, **_kwargs: CatalogueCheck(products=products)
    )
    return products


async def _ingest(api: PublicApi) -> httpx.Response:
    """An ingestion answered as a server answers it: a 500 too (the test client would raise)."""
    tenant = new_tenant()
    await create_tenant(api, tenant)
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        return await asyncio.wait_for(
            client.post(
                f"/v2/tenants/{tenant}/knowledge",
                headers=roles(api, tenant)["admin"] | NDJSON,
                content="{}\n",
            ),
            timeout=20,
        )


async def test_a_product_the_contract_cannot_carry_is_400_naming_its_line(
    public_api: PublicApi, unchecked: list[Any]
) -> None:
    deep = retrieval_pb.Product(id="deep", name="Deep")
    deep.attributes.update({"deep": nested(120)})
    unchecked += [(1, retrieval_pb.Product(id="fine", name="Fine")), (7, deep)]
    reply = await _ingest(public_api)
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["errors"][0]["field"] == "line 7"


async def test_another_failure_inside_the_stream_is_a_500_problem(
    public_api: PublicApi, unchecked: list[Any]
) -> None:
    unchecked += [(1, "not a product")]
    reply = await _ingest(public_api)
    assert reply.status_code == 500, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["detail"] == "internal error"


class CancelledRetrieval:
    async def BulkIngest(self, requests: Any, **_kwargs: Any) -> Any:
        async for _ in requests:
            break
        raise asyncio.CancelledError


class ClientsWith:
    def __init__(self, clients: Any, retrieval: Any) -> None:
        self._clients, self.retrieval = clients, retrieval

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clients, name)


async def test_a_stream_cancelled_under_the_request_is_a_503_problem(
    public_api: PublicApi,
) -> None:
    tenant = new_tenant()
    await create_tenant(public_api, tenant)
    clients = public_api.app.state.clients
    public_api.app.state.clients = ClientsWith(clients, CancelledRetrieval())
    try:
        reply = await asyncio.wait_for(
            public_api.client.post(
                f"/v2/tenants/{tenant}/knowledge",
                headers=roles(public_api, tenant)["admin"] | NDJSON,
                content=json.dumps(PRODUCTS[0]),
            ),
            timeout=20,
        )
    finally:
        public_api.app.state.clients = clients
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.headers["Retry-After"] == "1"
