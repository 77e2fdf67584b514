"""LlmService over gRPC: validate the prompt, answer with the configured engine."""

from collections.abc import AsyncIterator
from typing import Any

from metaagent.llm.v1 import llm_service_pb2 as pb
from metaagent.llm.v1 import llm_service_pb2_grpc

from services.llm.offline import OfflineResponder
from services.llm.settings import LlmSettings
from services.mesh.errors import FieldViolation, invalid_argument


class LlmServicer(llm_service_pb2_grpc.LlmServiceServicer):
    def __init__(self, responder: OfflineResponder, settings: LlmSettings) -> None:
        self._responder = responder
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

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        self._validate(request.prompt, request.HasField("prompt"))
        return pb.GenerateResponse(generation=self._responder.generate(request.prompt))

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: Any
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        self._validate(request.prompt, request.HasField("prompt"))
        generation = self._responder.generate(request.prompt)
        words = generation.reply_text.split(" ")
        for index, word in enumerate(words):
            yield pb.GenerateStreamResponse(delta=word if index == 0 else f" {word}")
        yield pb.GenerateStreamResponse(final=generation)
