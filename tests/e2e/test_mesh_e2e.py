"""The whole mesh as processes: the seed's request answered, ids in every log, clean stops."""

import asyncio
import json
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.support.mesh_process import dev_mesh, mesh_environment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SEED_REQUEST = {
    "tenantId": "demo",
    "sessionId": "sess-e2e-1",
    "correlationId": "corr-e2e-0001",
    "userId": "user-42",
    "channel": "web",
    "input": {"type": "text", "text": "Quiero comprar la zapatilla Kobe, la dejé en el carrito."},
}


async def test_the_seed_request_flows_through_every_service(tmp_path: Path) -> None:
    async with dev_mesh(tmp_path) as mesh:
        await mesh.wait_healthy()
        status = mesh.status()
        assert status["healthy"] is True
        assert {row["name"] for row in status["components"]} == {
            "context",
            "retrieval",
            "llm",
            "speech",
            "orchestrator",
            "gateway",
        }
        assert all(row["status"] == "SERVING" for row in status["components"])

        token = mesh.run("token", "--tenant", "demo", "--sub", "user-42").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30) as client:
            reply = await client.post(
                "/v2/agents/meta-agent/process", json=SEED_REQUEST, headers=headers
            )
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert {"responseText", "actions", "embeddingsUsed", "tokensConsumed"} <= body.keys()
            assert "Kobe" in body["responseText"]
            assert body["intent"] == "checkout_flow"
            assert body["embeddingsUsed"] >= 1
            assert body["actions"] == []

            confirm = {
                **SEED_REQUEST,
                "correlationId": "corr-e2e-0002",
                # the Kobe comes in sizes 38-46: the confirmation gives the size too
                "input": {"type": "text", "text": "Sí, confirmo, en talla 43"},
            }
            second = (
                await client.post("/v2/agents/meta-agent/process", json=confirm, headers=headers)
            ).json()
            assert second["intent"] == "confirm_purchase"
            assert [a["type"] for a in second["actions"]] == ["create_order", "payment_link"]
            assert all(a["status"] == "pending" and a["actionId"] for a in second["actions"])
            assert second["actions"][0]["params"]["productId"] == "product-kobe-6-protro"
            assert second["actions"][0]["params"]["size"] == "43"

        touched = ("gateway", "orchestrator", "context", "retrieval", "llm")
        missing = await _components_without(mesh, touched, "corr-e2e-0001")
        assert not missing, f"never logged the correlation id: {missing}"
        customer_text = SEED_REQUEST["input"]["text"]
        for component in ("gateway", "orchestrator", "context", "retrieval", "llm"):
            raw = (mesh.state_dir / "logs" / f"{component}.log").read_text()
            assert customer_text not in raw, f"{component} logged customer text"

        mesh.process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(mesh.process.wait(), 30) == 0
    output = (tmp_path / "dev-output.log").read_text()
    assert "all components SERVING" in output
    assert "stopped" in output.splitlines()[-1]
    gateway_port = int(mesh.env["GATEWAY_PORT"])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gateway_port), timeout=1).close()


async def test_a_child_that_dies_is_restarted(tmp_path: Path) -> None:
    async with dev_mesh(tmp_path) as mesh:
        await mesh.wait_healthy()
        llm_pid = _pid_of(tmp_path, "llm")
        os.kill(llm_pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        await mesh.wait_healthy(timeout=30)
        assert _pid_of(tmp_path, "llm") != llm_pid
    output = (tmp_path / "dev-output.log").read_text()
    assert "llm exited with code -9; restarting" in output


async def test_a_child_that_keeps_dying_stops_the_run_with_a_clear_message(tmp_path: Path) -> None:
    env = mesh_environment(tmp_path)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", int(env["LLM_ADDR"].rsplit(":", 1)[1])))
    blocker.listen()
    try:
        async with dev_mesh(tmp_path, env) as mesh:
            code = await asyncio.wait_for(mesh.process.wait(), 90)
    finally:
        blocker.close()
    assert code == 1
    output = (tmp_path / "dev-output.log").read_text()
    assert "cannot listen on" in output
    assert "stopped: llm exited with code 1 4 times" in output


async def _components_without(mesh, components: tuple[str, ...], correlation_id: str) -> set[str]:
    """Components whose log has no line with `correlation_id`, after up to 10 s of waiting
    for the supervisor to copy their output."""
    missing = set(components)
    for _ in range(100):
        missing = {
            component
            for component in missing
            if correlation_id not in {line.get("correlationId") for line in mesh.log(component)}
        }
        if not missing:
            break
        await asyncio.sleep(0.1)
    return missing


def _pid_of(state_dir: Path, component: str) -> int:
    for line in reversed((state_dir / "logs" / f"{component}.log").read_text().splitlines()):
        if line.startswith("{") and "listening on" in json.loads(line)["msg"]:
            return int(json.loads(line)["pid"])
    raise AssertionError(f"no start line for {component}")
