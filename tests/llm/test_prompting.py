"""Prompt to messages: the seed's order, and trimming that never cuts the system prompt or the
customer's message."""

import grpc
import pytest
from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.llm.prompting import build_messages, estimate_tokens
from services.mesh.errors import MeshError


def _prompt(
    turns: int = 6, documents: int = 3, summary: str = "El cliente busca zapatillas."
) -> pb.Prompt:
    prompt = pb.Prompt(
        system="Eres el asistente de la tienda.\n\nNo des datos personales.",
        user_text="¿Tenéis la Kobe en talla 43?",
        summary=summary,
        tenant=tenant_pb2.TenantConfig(
            tenant_id="demo", language="es", allowed_actions=["create_order"]
        ),
    )
    for n in range(turns):
        role = conversation_pb2.TURN_ROLE_USER if n % 2 == 0 else conversation_pb2.TURN_ROLE_AGENT
        prompt.recent_turns.add(role=role, text=f"turno {n} " + "palabra " * 20)
    for n in range(documents):
        prompt.documents.add(
            doc_id=f"doc-{n}", text=f"documento {n} " + "texto " * 30, score=1 - n / 10
        )
    prompt.entities.update({"product": "Kobe 6"})
    return prompt


def test_messages_follow_the_seeds_order() -> None:
    built = build_messages(_prompt(), budget_tokens=100_000)
    roles = [m.role for m in built.messages]
    assert roles == [
        "system",
        "user",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert built.messages[0].content.startswith("Eres el asistente de la tienda.")
    assert "create_order" in built.messages[0].content
    assert "[doc-0]" in built.messages[1].content and "summary" in built.messages[1].content
    assert built.messages[-1].content.startswith("¿Tenéis la Kobe en talla 43?")
    assert '"product": "Kobe 6"' in built.messages[-1].content
    assert (built.dropped_turns, built.dropped_documents, built.dropped_summary) == (0, 0, False)


def test_trimming_drops_the_oldest_turns_first_then_the_summary_then_weak_documents() -> None:
    full = build_messages(_prompt(), budget_tokens=100_000)
    budget = full.estimated_tokens - 20
    trimmed = build_messages(_prompt(), budget_tokens=budget)
    assert trimmed.dropped_turns == 1 and trimmed.estimated_tokens <= budget
    assert "turno 0" not in " ".join(m.content for m in trimmed.messages)
    assert "turno 5" in " ".join(m.content for m in trimmed.messages)

    system_and_user = estimate_tokens(full.messages[0].content) + estimate_tokens(
        full.messages[-1].content
    )
    tight = build_messages(_prompt(), budget_tokens=system_and_user + 60)
    assert tight.dropped_turns == 6 and tight.dropped_summary and tight.dropped_documents >= 2
    assert tight.messages[0] == full.messages[0] and tight.messages[-1] == full.messages[-1]
    kept = " ".join(m.content for m in tight.messages)
    assert "doc-2" not in kept


def test_a_prompt_whose_system_and_message_do_not_fit_is_refused() -> None:
    with pytest.raises(MeshError) as refused:
        build_messages(_prompt(), budget_tokens=20)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.violations[0].field == "prompt"
