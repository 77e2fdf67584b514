"""Readiness probes against real servers: health follows the dependency."""

import asyncio

import pytest
from metaagent.llm.v1 import llm_service_pb2_grpc  # noqa: F401 - contracts importable

from services.llm.offline import OfflineResponder
from services.llm.servicer import LlmServicer
from services.llm.settings import LlmSettings
from services.mesh.clients import open_channel, serving_status
from services.mesh.probes import postgres_ready, redis_ready
from services.mesh.settings import MeshSettings
from tests.support.ports import free_port
from tests.support.redis_server import throwaway_redis
from tests.support.servers import llm_binding, running


async def test_redis_probe_passes_on_a_live_server(redis_url: str) -> None:
    await redis_ready(redis_url)()


async def test_postgres_probe_passes_on_a_live_server(postgres_dsn: str) -> None:
    await postgres_ready(postgres_dsn)()


async def test_probes_name_the_dependency_but_not_its_password() -> None:
    port = free_port()
    with pytest.raises(ConnectionError) as redis_down:
        await redis_ready(f"redis://:hunter2-secret@127.0.0.1:{port}/0", timeout=0.5)()
    with pytest.raises(ConnectionError) as postgres_down:
        await postgres_ready(f"postgresql://app:hunter2-secret@127.0.0.1:{port}/db", timeout=0.5)()
    for error in (redis_down.value, postgres_down.value):
        assert f"127.0.0.1:{port}" in str(error)
        assert "hunter2" not in str(error)


async def test_health_stays_not_serving_until_redis_comes_up(
    settings: MeshSettings, redis_url: str, tmp_path
) -> None:
    port = free_port()
    servicer = LlmServicer(OfflineResponder(0.3), LlmSettings())
    probe = redis_ready(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    async with running("llm", settings, [llm_binding(servicer)], [probe]) as (_, address):
        client = MeshSettings(state_dir=settings.state_dir, llm_addr=address)
        async with open_channel(client, "operator", "llm") as channel:
            await asyncio.sleep(0.5)
            assert await serving_status(channel) == "NOT_SERVING"
            with throwaway_redis(tmp_path, port):
                async with asyncio.timeout(15):
                    while await serving_status(channel) != "SERVING":
                        await asyncio.sleep(0.1)
