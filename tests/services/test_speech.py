"""Speech synthesis: WAV from espeak-ng when installed, a clear error when it is not."""

import shutil
from pathlib import Path

import grpc
import pytest
from metaagent.speech.v1 import speech_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from services.mesh.errors import MeshError
from services.mesh.settings import MeshSettings
from services.speech.app import build_server
from services.speech.settings import SpeechSettings
from tests.support.servers import started


async def _synthesize(
    state_dir: Path, binary: str, request: pb.SynthesizeRequest
) -> list[pb.SynthesizeResponse]:
    settings = SpeechSettings(
        state_dir=state_dir, grpc_listen_addr="127.0.0.1:0", espeak_binary=binary
    )
    async with started(build_server(settings)) as address:
        clients = MeshClients(MeshSettings(state_dir=state_dir, speech_addr=address), "gateway")
        call = correlation.CallContext(correlation_id="corr-tts", tenant_id="demo")
        try:
            with correlation.bound(call):
                return [chunk async for chunk in clients.speech.Synthesize(request)]
        finally:
            await clients.close()


async def test_without_an_engine_synthesis_fails_with_a_clear_precondition(state_dir: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _synthesize(state_dir, "/nonexistent/espeak-ng", pb.SynthesizeRequest(text="hola"))
    error = MeshError.from_rpc_error(failed.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "TTS_ENGINE_MISSING"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SynthesizeRequest(text=" "), "text"),
        (pb.SynthesizeRequest(text="x" * 2001), "text"),
        (
            pb.SynthesizeRequest(
                text="hola", format=pb.AudioFormat(encoding=pb.AUDIO_ENCODING_MP3)
            ),
            "format.encoding",
        ),
    ],
)
async def test_bad_synthesis_requests_name_the_field(
    state_dir: Path, request_: pb.SynthesizeRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _synthesize(state_dir, "espeak-ng", request_)
    assert MeshError.from_rpc_error(failed.value).violations[0].field == field


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_espeak_synthesis_streams_a_wav(state_dir: Path) -> None:
    chunks = await _synthesize(
        state_dir, "espeak-ng", pb.SynthesizeRequest(text="hola", language="es")
    )
    audio = b"".join(chunk.audio for chunk in chunks)
    assert audio[:4] == b"RIFF"
    assert chunks[0].format.encoding == pb.AUDIO_ENCODING_WAV
