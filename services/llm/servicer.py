"""LlmService over gRPC: validate the prompt, let the engine answer."""

from collections.abc import AsyncIterator
from typing import Any

from metaagent.llm.v1 import llm_service_pb2 as pb
from metaagent.llm.v1 import llm_service_pb2_grpc

from services.llm.engine import LlmEngine
from services.llm.settings import LlmSettings
from services.mesh.errors import FieldViolation, invalid_argument


class LlmServicer(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, engine: LlmEngine, settings: LlmSettings) -> None:
        self._engine = engine
        self._settings = settings

    def _validate(self, prompt: pb.Prompt, has_prompt: bool) -> None:
        if not has_prompt:
            raise invalid_argument(FieldViolation("prompt", "is required"))
        if not prompt.user_text.strip():
            raise invalid_argument(FieldViolation("prompt.user_text", "is required"))
        if len(prompt.user_text) > self._settings.max_user_text_chars:
            raise invalid_argument(
                FieldViolation(
                    "prompt.user_text", f"exceeds {self._settings.max_user_text_chars} characters"
                )
            )
        self._engine.check(prompt)

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        self._validate(request.prompt, request.HasField("prompt"))
        return pb.GenerateResponse(generation=await self._engine.generate(request.prompt))

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: Any
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        self._validate(request.prompt, request.HasField("prompt"))
        async for event in self._engine.generate_stream(request.prompt):
            if isinstance(event, str):
                yield pb.GenerateStreamResponse(delta=event)
            else:
                yield pb.GenerateStreamResponse(final=event)
