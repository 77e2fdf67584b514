"""A real LLM-service process whose Generate takes `--delay` seconds (graceful-stop tests).

python -m tests.support.slow_llm --port 50999 --delay 1.0
"""

import argparse
import asyncio
from typing import Any

import uvloop
from metaagent.llm.v1 import llm_service_pb2 as llm_pb
from metaagent.llm.v1 import llm_service_pb2_grpc

from services.mesh import identity, logs
from services.mesh.server import MeshServer
from services.mesh.settings import MeshSettings
from tests.support.servers import llm_binding


class SlowLlm(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def Generate(
        self, request: llm_pb.GenerateRequest, context: Any
    ) -> llm_pb.GenerateResponse:
        await asyncio.sleep(self.delay)
        return llm_pb.GenerateResponse(generation=llm_pb.Generation(reply_text="finished"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, required=True)
    args = parser.parse_args()
    settings = MeshSettings()
    logs.configure(identity.LLM, "INFO")
    server = MeshServer(
        identity.LLM, settings, [llm_binding(SlowLlm(args.delay))], listen=f"127.0.0.1:{args.port}"
    )
    uvloop.run(server.run())


if __name__ == "__main__":
    main()
