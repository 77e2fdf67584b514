"""The speech service process."""

from metaagent.speech.v1 import speech_service_pb2, speech_service_pb2_grpc

from services.mesh import identity, logs
from services.mesh.server import MeshServer, ServiceBinding
from services.speech.servicer import SpeechServicer
from services.speech.settings import SpeechSettings
from services.speech.synthesis import EspeakSynthesizer


def build_server(settings: SpeechSettings) -> MeshServer:
    return MeshServer(
        identity.SPEECH,
        settings,
        [
            ServiceBinding(
                speech_service_pb2.DESCRIPTOR.services_by_name["SpeechService"],
                speech_service_pb2_grpc.add_SpeechServiceServicer_to_server,
                SpeechServicer(EspeakSynthesizer(settings.espeak_binary), settings),  # type: ignore[abstract]
            )
        ],
    )


async def serve() -> None:
    settings = SpeechSettings()
    logs.configure(identity.SPEECH, settings.log_level)
    await build_server(settings).run()
