"""The seed's cases through the public API: the real gateway (under uvicorn, for the agents'
WebSocket) over the in-process mesh, with the offline responder and the demo tenant.

- A, in English: a purchase intent, then the confirmation: create_order and payment_link within
  two customer turns of the intent;
- C, in Spanish and in English: a customer asks for a person (or sends two unclear messages); a
  human agent connected on the WebSocket receives the hand-over with the whole context, replies
  into the session through the WebSocket, and the customer's next turn has that reply and
  everything said before in its context: the customer never repeats anything.
"""

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from metaagent.common.v1 import conversation_pb2
from metaagent.llm.v1 import llm_service_pb2 as llm_pb

from services.orchestrator import turn as turn_module
from services.orchestrator.escalation import NOTICE
from tests.gateway.test_handoff_ws import (
    agent_socket,
    hub_of,
    say,
    served,
    token_of,
    transcript,
    until,
)
from tests.support.inprocess_mesh import InProcessMesh
from tests.support.public_api import PublicApi

pytestmark = pytest.mark.timeout(120)

USER = conversation_pb2.TURN_ROLE_USER
AGENT = conversation_pb2.TURN_ROLE_AGENT
HUMAN = conversation_pb2.TURN_ROLE_HUMAN


@pytest.fixture
async def address(public_api: PublicApi) -> AsyncIterator[str]:
    async with served(public_api.app) as bound:
        yield bound


@pytest.fixture
def prompts(monkeypatch: pytest.MonkeyPatch) -> list[llm_pb.Prompt]:
    """Every prompt the orchestrator builds, in order."""
    built: list[llm_pb.Prompt] = []
    original = turn_module.build_prompt

    def recording(*args: Any) -> llm_pb.Prompt:
        prompt = original(*args)
        built.append(prompt)
        return prompt

    monkeypatch.setattr(turn_module, "build_prompt", recording)
    return built


# --- case A ------------------------------------------------------------------------------------


async def test_case_a_in_english_a_purchase_is_paid_for_within_two_turns(
    public_api: PublicApi,
) -> None:
    session, user = "sess-a-en", "cust-a-en"
    intent = await say(
        public_api, session, "I want to buy the Kobe sneakers, I left them in my cart", "a-1", user
    )
    assert intent["intent"] == "checkout_flow" and intent["actions"] == []
    assert "Kobe" in intent["responseText"] and "payment link" in intent["responseText"]
    confirmed = await say(public_api, session, "Yes, please, in size 43", "a-2", user)
    assert confirmed["intent"] == "confirm_purchase"
    assert [a["type"] for a in confirmed["actions"]] == ["create_order", "payment_link"]
    order, link = (a["params"] for a in confirmed["actions"])
    assert order["productId"] == "product-kobe-6-protro" and order["size"] == "43"
    assert link["amount"] and link["currency"]
    assert all(a["status"] == "pending" and a["actionId"] for a in confirmed["actions"])
    assert "payment link" in confirmed["responseText"]


# --- case C ------------------------------------------------------------------------------------

CASE_C = {
    "es": {
        "before": "¿Cuánto cuesta la zapatilla Kobe?",
        "ask": "Quiero hablar con una persona, por favor",
        "human": "Hola, soy Marta, del equipo. La Kobe cuesta lo que te dijeron; ¿te la reservo?",
        "after": "Sí, resérvamela, gracias",
    },
    "en": {
        "before": "How much are the Kobe sneakers?",
        "ask": "I want to talk to a human, please",
        "human": "Hi, I'm Marta from the team. I can hold the Kobe for you: shall I?",
        "after": "Yes please, hold them for me",
    },
}


async def _take_over(
    public_api: PublicApi,
    mesh: InProcessMesh,
    address: str,
    session: str,
    user: str,
    said: list[tuple[str, str]],
    human_text: str,
    expected: dict[str, Any],
) -> None:
    """A human agent on the WebSocket receives the hand-over of `session` with the whole
    context (`said`: the (customer, agent) exchanges so far), acknowledges it and replies."""
    hub = hub_of(mesh)
    token = token_of(public_api, role="agent", subject="agent-marta")
    async with agent_socket(address, token, via="subprotocol") as agent:
        handoffs = await agent.handoffs(2)
        assert {h["kind"] for h in handoffs} == {"handoff", "ticket"}
        for handoff in handoffs:
            assert handoff["sessionId"] == session and handoff["tenantId"] == "demo"
            assert handoff["user"] == {"userId": user}
            assert handoff["transcript"] == [
                {"role": role, "text": text}
                for customer, answer in said
                for role, text in (("user", customer), ("agent", answer))
            ], "the customer's earlier messages included"
            assert handoff["summary"]
            for key, value in expected.items():
                assert handoff[key] == value, key
            await agent.send({"type": "ack", "eventId": handoff["eventId"]})
            assert (await agent.next("ack", eventId=handoff["eventId"]))["acknowledged"]

        await agent.send(
            {"type": "reply", "sessionId": session, "text": human_text, "correlationId": "h-1"}
        )
        stored = (await agent.next("ack", correlationId="h-1"))["turn"]
        assert (stored["role"], stored["text"], stored["sessionId"]) == (
            "human",
            human_text,
            session,
        )
    await until(lambda: hub.agents("demo") == 0)
    assert hub.pending("demo") == 0, "both hand-overs acknowledged: none comes back"


@pytest.mark.parametrize("language", ["es", "en"])
async def test_case_c_a_person_takes_over_with_the_whole_context(
    public_api: PublicApi,
    mesh: InProcessMesh,
    address: str,
    prompts: list[llm_pb.Prompt],
    caplog: pytest.LogCaptureFixture,
    language: str,
) -> None:
    caplog.set_level(logging.INFO)
    case = CASE_C[language]
    session, user = f"sess-c-{language}", f"cust-c-{language}"
    before = await say(public_api, session, case["before"], "c-1", user)
    asked = await say(public_api, session, case["ask"], "c-2", user)
    assert sorted(a["type"] for a in asked["actions"]) == ["create_ticket", "handoff_human"]
    said = [(case["before"], before["responseText"]), (case["ask"], asked["responseText"])]
    expected = {"reason": "customer_request", "language": language}
    await _take_over(public_api, mesh, address, session, user, said, case["human"], expected)
    entities = prompts[-1].entities  # what the hand-over carried as entities came from here

    after = await say(public_api, session, case["after"], "c-3", user)
    assert not any(a["type"] == "handoff_human" for a in after["actions"]), "handed over once"
    prompt = prompts[-1]
    assert prompt.user_text == case["after"]
    assert [(t.role, t.text) for t in prompt.recent_turns] == [
        (USER, case["before"]),
        (AGENT, before["responseText"]),
        (USER, case["ask"]),
        (AGENT, asked["responseText"]),
        (HUMAN, case["human"]),
    ], "the next turn knows everything: the customer repeats nothing"
    assert dict(prompt.entities.items()).keys() >= dict(entities.items()).keys()
    assert [role for role, _ in await transcript(mesh, session)] == [
        USER,
        AGENT,
        USER,
        AGENT,
        HUMAN,
        USER,
        AGENT,
    ]
    for record in caplog.records:  # what the customer and the person said is never logged
        logged = record.getMessage() + repr(vars(record))
        assert not any(case[key] in logged for key in ("before", "ask", "human", "after"))


async def test_case_c_two_unclear_messages_reach_a_person_too(
    public_api: PublicApi, mesh: InProcessMesh, address: str, prompts: list[llm_pb.Prompt]
) -> None:
    session, user = "sess-c-unclear", "cust-c-unclear"
    first = await say(public_api, session, "zxqv blorp fnord", "u-1", user)
    assert first["actions"] == [], "one unclear message gets an answer, not a person"
    second = await say(public_api, session, "qwerty plugh xyzzy", "u-2", user)
    assert [a["type"] for a in second["actions"]] == ["create_ticket", "handoff_human"]
    assert second["responseText"].endswith(NOTICE["es"])
    said = [
        ("zxqv blorp fnord", first["responseText"]),
        ("qwerty plugh xyzzy", second["responseText"]),
    ]
    human = "Hola, soy Marta. ¿En qué te puedo ayudar?"
    expected = {"reason": "low_confidence"}
    await _take_over(public_api, mesh, address, session, user, said, human, expected)
    await say(public_api, session, "Quería saber los plazos de envío", "u-3", user)
    assert (HUMAN, human) in [(t.role, t.text) for t in prompts[-1].recent_turns]
