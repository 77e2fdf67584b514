"""`metaagent dev` as a user runs it, on free ports and a private state directory."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
METAAGENT = [sys.executable, "-m", "cli"]


@dataclass
class DevMesh:
    process: asyncio.subprocess.Process
    env: dict[str, str]
    state_dir: Path
    gateway_url: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*METAAGENT, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def status(self) -> dict:
        return json.loads(self.run("status", "--json").stdout)

    def log(self, component: str) -> list[dict]:
        lines = (self.state_dir / "logs" / f"{component}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                result = await asyncio.to_thread(self.run, "status", "--json")
                if result.returncode == 0:
                    return
                if self.process.returncode is not None:
                    raise RuntimeError(f"metaagent dev exited with {self.process.returncode}")
                await asyncio.sleep(0.5)


def mesh_environment(state_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.endswith("_ADDR") and key not in ("JWT_SECRET", "GATEWAY_PORT")
    }
    gateway_port, *service_ports = free_ports(6)
    components = ("context", "retrieval", "llm", "speech", "orchestrator")
    env.update(
        METAAGENT_STATE_DIR=str(state_dir),
        GATEWAY_PORT=str(gateway_port),
        GRPC_SHUTDOWN_GRACE_SECONDS="2",
        PYTHONUNBUFFERED="1",
        **{
            f"{c.upper()}_ADDR": f"127.0.0.1:{port}"
            for c, port in zip(components, service_ports, strict=True)
        },
    )
    return env


@asynccontextmanager
async def dev_mesh(state_dir: Path, env: dict[str, str] | None = None) -> AsyncIterator[DevMesh]:
    env = env or mesh_environment(state_dir)
    output = (state_dir / "dev-output.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *METAAGENT,
        "dev",
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    mesh = DevMesh(process, env, state_dir, f"http://127.0.0.1:{env['GATEWAY_PORT']}")
    try:
        yield mesh
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        output.close()
