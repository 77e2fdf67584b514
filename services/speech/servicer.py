"""SpeechService over gRPC. Recognition, voice sessions and recordings are not served yet:
their RPCs answer UNIMPLEMENTED."""

from collections.abc import AsyncIterator
from typing import Any

from metaagent.speech.v1 import speech_service_pb2 as pb
from metaagent.speech.v1 import speech_service_pb2_grpc

from services.mesh.errors import FieldViolation, invalid_argument
from services.speech.settings import SpeechSettings
from services.speech.synthesis import EspeakSynthesizer

CHUNK_BYTES = 32 * 1024


class SpeechServicer(speech_service_pb2_grpc.SpeechServiceServicer):
    def __init__(self, synthesizer: EspeakSynthesizer, settings: SpeechSettings) -> None:
        self._synthesizer = synthesizer
        self._settings = settings

    async def Synthesize(
        self, request: pb.SynthesizeRequest, context: Any
    ) -> AsyncIterator[pb.SynthesizeResponse]:
        if not request.text.strip():
            raise invalid_argument(FieldViolation("text", "is required"))
        if len(request.text) > self._settings.max_synthesis_chars:
            raise invalid_argument(
                FieldViolation("text", f"exceeds {self._settings.max_synthesis_chars} characters")
            )
        if request.format.encoding not in (pb.AUDIO_ENCODING_UNSPECIFIED, pb.AUDIO_ENCODING_WAV):
            raise invalid_argument(
                FieldViolation("format.encoding", "the offline engine produces WAV only")
            )
        audio = await self._synthesizer.synthesize(request.text, request.language)
        audio_format = pb.AudioFormat(
            encoding=pb.AUDIO_ENCODING_WAV,
            sample_rate_hz=self._synthesizer.sample_rate_hz,
            channels=1,
        )
        for offset in range(0, len(audio), CHUNK_BYTES):
            yield pb.SynthesizeResponse(
                audio=audio[offset : offset + CHUNK_BYTES],
                format=audio_format if offset == 0 else None,
            )
