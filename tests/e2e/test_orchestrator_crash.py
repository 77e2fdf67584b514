"""`kill -9` of the orchestrator in the middle of a turn, then the client's retry with the same
correlation id: one consistent result and no orphan actions (the mesh as processes, the model
played by a slow OpenAI-compatible server on loopback)."""

import asyncio
import json
import os
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.support.mesh_process import dev_mesh, mesh_environment
from tests.support.openai_server import TEST_API_KEY, OpenAIServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

OFFER = {
    "reply": "La Kobe 6 Protro cuesta 189.99 EUR. ¿Confirmas el pedido en talla 43?",
    "intent": "checkout_flow",
    "confidence": 0.9,
    "actions": [],
    "entities_json": json.dumps({"awaiting": "confirmation", "size": "43"}),
}
ORDER = {
    "reply": "Hecho: tu pedido está en marcha y te envío el enlace de pago.",
    "intent": "confirm_purchase",
    "confidence": 0.95,
    "actions": [
        {
            "type": "create_order",
            "params_json": json.dumps(
                {
                    "productId": "product-kobe-6-protro",
                    "quantity": 1,
                    "size": "43",
                    "unitPrice": "189.99",
                    "currency": "EUR",
                }
            ),
        },
        {
            "type": "payment_link",
            "params_json": json.dumps({"amount": "189.99", "currency": "EUR"}),
        },
    ],
    "entities_json": "{}",
}


def _pid_of(state_dir: Path, component: str) -> int:
    for line in reversed((state_dir / "logs" / f"{component}.log").read_text().splitlines()):
        if line.startswith("{") and "listening on" in json.loads(line)["msg"]:
            return int(json.loads(line)["pid"])
    raise AssertionError(f"no start line for {component}")


def _rows(state_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(state_dir / "context.db") as db:
        return db.execute(sql, ("sess-crash",)).fetchall()


async def test_a_turn_killed_mid_way_and_retried_gives_one_result(tmp_path: Path) -> None:
    async with OpenAIServer(api_key=TEST_API_KEY) as model:
        env = mesh_environment(tmp_path)
        env.update(
            OPENAI_BASE_URL=model.v1_url,
            OPENAI_API_KEY=TEST_API_KEY,
            OPENAI_MODEL="gpt-4o-mini",
            LLM_PROVIDER_ORDER='["openai"]',
            LLM_RETRY_ATTEMPTS="1",
            ORCHESTRATOR_TURN_LEASE_SECONDS="3",
            GRPC_DEFAULT_TIMEOUT_SECONDS="20",
        )
        async with dev_mesh(tmp_path, env) as mesh:
            await mesh.wait_healthy()
            token = mesh.run("token", "--tenant", "demo", "--sub", "user-7").stdout.strip()
            headers = {"Authorization": f"Bearer {token}"}

            def turn(text: str, correlation_id: str) -> dict[str, object]:
                return {
                    "tenantId": "demo",
                    "sessionId": "sess-crash",
                    "correlationId": correlation_id,
                    "userId": "user-7",
                    "channel": "web",
                    "input": {"type": "text", "text": text},
                }

            async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=40) as client:
                model.reply(json.dumps(OFFER))
                offer = await client.post(
                    "/v2/agents/meta-agent/process",
                    json=turn("Quiero la Kobe en la 43", "corr-crash-1"),
                    headers=headers,
                )
                assert offer.status_code == 200, offer.text
                assert offer.json()["intent"] == "checkout_flow"

                model.latency = 30.0
                model.reply(json.dumps(ORDER), json.dumps(ORDER))
                confirm = turn("Sí, confirmo", "corr-crash-2")
                first = asyncio.create_task(
                    client.post("/v2/agents/meta-agent/process", json=confirm, headers=headers)
                )
                async with asyncio.timeout(20):
                    while model.in_flight == 0:
                        await asyncio.sleep(0.05)
                os.kill(_pid_of(tmp_path, "orchestrator"), signal.SIGKILL)
                failed = await first
                assert failed.status_code >= 500
                model.latency = 0.0
                await asyncio.sleep(1.0)
                await mesh.wait_healthy(timeout=60)

                retried = None
                async with asyncio.timeout(60):
                    while retried is None or retried.status_code != 200:
                        retried = await client.post(
                            "/v2/agents/meta-agent/process", json=confirm, headers=headers
                        )
                        if retried.status_code != 200:
                            await asyncio.sleep(0.5)
                again = await client.post(
                    "/v2/agents/meta-agent/process", json=confirm, headers=headers
                )

    body, replay = retried.json(), again.json()
    assert [a["type"] for a in body["actions"]] == ["create_order", "payment_link"]
    assert [a["actionId"] for a in replay["actions"]] == [a["actionId"] for a in body["actions"]]
    assert replay["responseText"] == body["responseText"]
    turns = _rows(tmp_path, "SELECT correlation_id FROM conversation_turns WHERE session_id = ?")
    assert sorted(c for (c,) in turns) == ["corr-crash-1"] * 2 + ["corr-crash-2"] * 2
    outbox = _rows(tmp_path, "SELECT message_id FROM outbox WHERE session_id = ?")
    assert sorted(m for (m,) in outbox) == sorted(a["actionId"] for a in body["actions"])
