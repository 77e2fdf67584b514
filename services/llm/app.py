"""The LLM service process: the configured deployments (embedded: the offline responder)."""

from metaagent.llm.v1 import llm_service_pb2, llm_service_pb2_grpc

from services.llm import metrics
from services.llm.breaker import BreakerBoard
from services.llm.deployments import configured_deployments
from services.llm.engine import EnginePolicy, LlmEngine
from services.llm.limits import open_tenant_limits
from services.llm.offline import OfflineResponder
from services.llm.providers import ChatProvider
from services.llm.response_cache import open_response_cache
from services.llm.servicer import LlmServicer
from services.llm.settings import LlmSettings
from services.mesh import identity, logs
from services.mesh.server import MeshServer, ServiceBinding


def _breaker_changed(name: str, old: str, new: str) -> None:
    metrics.CIRCUIT_OPEN.labels(name).set(0 if new == "closed" else 1)


def build_engine(settings: LlmSettings, deployments: list[ChatProvider] | None = None) -> LlmEngine:
    """The engine over `deployments` (default: the configured ones)."""
    return LlmEngine(
        configured_deployments(settings) if deployments is None else deployments,
        BreakerBoard(
            settings.breaker_failures,
            settings.breaker_reset_seconds,
            on_state_change=_breaker_changed,
        ),
        open_tenant_limits(settings.limits_url),
        open_response_cache(settings.response_cache_url),
        OfflineResponder(settings.intent_threshold),
        EnginePolicy(
            max_output_tokens=settings.reserved_output_tokens(),
            requests_per_minute=settings.requests_per_minute,
            cache_ttl_seconds=settings.response_cache_ttl_seconds,
            cache_faq=settings.cache_faq,
        ),
    )


def build_server(
    settings: LlmSettings, deployments: list[ChatProvider] | None = None
) -> MeshServer:
    engine = build_engine(settings, deployments)
    return MeshServer(
        identity.LLM,
        settings,
        [
            ServiceBinding(
                llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
                llm_service_pb2_grpc.add_LlmServiceServicer_to_server,
                LlmServicer(engine, settings),
            )
        ],
        cleanup=[engine.aclose],
    )


async def serve() -> None:
    settings = LlmSettings()
    logs.configure(identity.LLM, settings.log_level)
    await build_server(settings).run()
