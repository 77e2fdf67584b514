"""The LLM engine: limits, the deployments in failover order behind their breakers, the answer
contract with one repair, and the offline responder when no model can answer.

For one prompt: the tenant's request rate and daily token budget are checked (RESOURCE_EXHAUSTED
with retry advice); a FAQ-style prompt may be answered from the response cache; each configured
deployment is tried in order, skipping those whose breaker is open; a deployment that is rate
limited, down or slow counts against its breaker and the next one is tried; a malformed answer
gets one repair request; when nothing works the response cache (if it holds this prompt) or the
offline responder answers, flagged `degraded`, and the degraded metric counts it. With no
deployment configured the offline responder is the engine itself (not degraded).
"""

import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from metaagent.common.v1 import conversation_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.llm import metrics
from services.llm.breaker import BreakerBoard
from services.llm.limits import Admission, TenantLimits
from services.llm.offline import OfflineResponder
from services.llm.prompting import build_messages, estimate_tokens
from services.llm.providers import (
    ChatCompletion,
    ChatDelta,
    ChatMessage,
    ChatProvider,
    ChatRequest,
    ProviderError,
)
from services.llm.response_cache import ResponseCache, prompt_key
from services.llm.structured import (
    GENERATION_SCHEMA,
    MalformedOutput,
    ParsedAnswer,
    ReplyStreamer,
    parse_answer,
    repair_instruction,
)
from services.mesh import correlation
from services.mesh.errors import FieldViolation, invalid_argument, unavailable
from services.mesh.metrics import tenant_label

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnginePolicy:
    max_output_tokens: int = 1000
    """Reserved for the answer in the context budget and the token estimate; each deployment
    caps its answers itself."""
    requests_per_minute: int = 120
    """Per tenant, when the tenant's own `turns_per_minute` is 0."""
    cache_ttl_seconds: int = 3600
    cache_faq: bool = False
    """Answer FAQ-style prompts (no history, no slots) from the cache when it has them."""


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(values)
    return result


@dataclass
class _Attempt:
    """What one prompt has cost so far, for charging the budget however the call ends."""

    estimate: int
    model: str = ""

    def estimate_for(self, answer: str) -> int:
        """Tokens of a call whose API reported no usage (estimated like the prompt)."""
        return self.estimate + estimate_tokens(answer)


def faq_style(prompt: pb.Prompt) -> bool:
    """A first question with nothing remembered: its answer does not depend on a conversation."""
    return not prompt.recent_turns and not prompt.entities.fields and not prompt.summary


class LlmEngine:
    def __init__(
        self,
        providers: Sequence[ChatProvider],
        breakers: BreakerBoard,
        limits: TenantLimits,
        cache: ResponseCache,
        offline: OfflineResponder,
        policy: EnginePolicy,
    ) -> None:
        self.providers = list(providers)
        self.breakers = breakers
        self.limits = limits
        self._cache = cache
        self._offline = offline
        self._policy = policy

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
        await self.limits.close()
        await self._cache.close()

    def check(self, prompt: pb.Prompt) -> None:
        """The prompt belongs to the calling tenant and carries its configuration."""
        tenant_id = correlation.current().tenant_id
        if not prompt.tenant.tenant_id:
            raise invalid_argument(
                FieldViolation("prompt.tenant", "is required: the tenant's configuration")
            )
        if prompt.tenant.tenant_id != tenant_id:
            raise invalid_argument(
                FieldViolation("prompt.tenant.tenant_id", "must be the caller's x-tenant-id")
            )

    async def generate(self, prompt: pb.Prompt) -> pb.Generation:
        final: pb.Generation | None = None
        async for event in self._run(prompt, streaming=False):
            if isinstance(event, pb.Generation):
                final = event
        assert final is not None
        return final

    def generate_stream(self, prompt: pb.Prompt) -> AsyncIterator[str | pb.Generation]:
        """Reply-text deltas, then the final Generation."""
        return self._run(prompt, streaming=True)

    async def _run(self, prompt: pb.Prompt, streaming: bool) -> AsyncIterator[str | pb.Generation]:
        self.check(prompt)
        if not self.providers:
            async for event in self._offline_events(prompt, degraded=False):
                yield event
            return
        tenant = prompt.tenant
        budget = min(provider.context_tokens for provider in self.providers)
        built = build_messages(prompt, budget - self._policy.max_output_tokens)
        admission = await self.limits.admit(
            tenant.tenant_id,
            tenant.turns_per_minute or self._policy.requests_per_minute,
            int(tenant.daily_token_budget),
            built.estimated_tokens + self._policy.max_output_tokens,
        )
        attempt = _Attempt(estimate=built.estimated_tokens)
        try:
            async for event in self._answer(prompt, built.messages, admission, streaming, attempt):
                yield event
        finally:
            if not admission.settled:
                if attempt.model:
                    # A model was asked and may have spent tokens (a cancelled stream, say):
                    # charge the reservation rather than give it back.
                    await self.limits.settle(admission, admission.reserved, model=attempt.model)
                else:
                    await self.limits.release(admission)

    async def _answer(
        self,
        prompt: pb.Prompt,
        messages: list[ChatMessage],
        admission: Admission,
        streaming: bool,
        attempt: "_Attempt",
    ) -> AsyncIterator[str | pb.Generation]:
        tenant_id = prompt.tenant.tenant_id
        cacheable = faq_style(prompt)
        # the key only serves the cache, which only keeps first questions
        key = prompt_key(prompt.SerializeToString(deterministic=True).hex()) if cacheable else ""
        if cacheable and self._policy.cache_faq:
            cached = await self._cached(tenant_id, key)
            if cached is not None:
                async for event in self._replay(cached):
                    yield event
                return
        request = ChatRequest(messages, GENERATION_SCHEMA)
        failure = "no_deployment_available"
        streamed: list[str] = []
        for provider in self.providers:
            breaker = self.breakers.get(provider.name)
            if not breaker.allow():
                metrics.REQUESTS.labels(provider.name, "skipped_open").inc()
                continue
            attempt.model = provider.model  # a call in flight may spend tokens
            completion: ChatCompletion | None = None
            try:
                if streaming:
                    streamer = ReplyStreamer()
                    async for piece in provider.stream(request):
                        if isinstance(piece, ChatDelta):
                            text = streamer.feed(piece.text)
                            if text:
                                streamed.append(text)
                                yield text
                        else:
                            completion = piece
                else:
                    completion = await provider.complete(request)
                if completion is None:
                    raise ProviderError("unavailable", "the stream ended without an answer")
            except ProviderError as error:
                failure = error.kind
                attempt.model = "" if not streamed else attempt.model
                metrics.REQUESTS.labels(provider.name, error.kind).inc()
                log.warning(
                    "deployment %s failed: %s (%s)", provider.name, error.kind, error.status
                )
                if streamed:
                    breaker.record_failure()
                    raise unavailable(
                        "the model failed mid-answer", reason="MODEL_FAILED"
                    ) from None
                if error.kind == "bad_request" and error.status != 404:
                    breaker.record_success()  # the deployment works; this request does not
                    break
                breaker.record_failure()
                continue
            except Exception:
                attempt.model = "" if not streamed else attempt.model
                log.exception("deployment %s failed unexpectedly", provider.name)
                breaker.record_failure()
                failure = "unavailable"
                if streamed:
                    raise unavailable(
                        "the model failed mid-answer", reason="MODEL_FAILED"
                    ) from None
                continue
            breaker.record_success()
            metrics.requests(provider.name, "ok").inc()
            model = completion.model or provider.model
            attempt.model = model
            used = self._account(model, completion) or attempt.estimate_for(completion.text)
            answer, repair_tokens = await self._parsed(provider, model, request, completion)
            await self.limits.settle(admission, used + repair_tokens, model=model)
            reply = "".join(streamed)
            if answer is None and reply:
                metrics.DEGRADED.labels("malformed_output").inc()
                yield pb.Generation(reply_text=reply, intent="unknown", model=model, degraded=True)
                return
            if answer is None:
                failure = "malformed_output"
                break
            if reply and answer.reply != reply:
                answer = dataclasses.replace(answer, reply=reply)  # what the customer saw
            generation = self._generation(answer, completion, used + repair_tokens, model)
            if cacheable:
                await self._cache.put(
                    tenant_id,
                    key,
                    generation.SerializeToString(),
                    self._policy.cache_ttl_seconds,
                )
            yield generation
            return
        if failure != "malformed_output" and cacheable:
            cached = await self._cached(tenant_id, key)
            if cached is not None:
                metrics.DEGRADED.labels("cached_response").inc()
                cached.degraded = True
                async for event in self._replay(cached):
                    yield event
                return
        metrics.DEGRADED.labels(failure).inc()
        log.warning("answering with the offline responder (degraded): %s", failure)
        async for event in self._offline_events(prompt, degraded=True):
            yield event

    def _account(self, model: str, completion: ChatCompletion) -> int:
        usage = completion.usage
        tenant = tenant_label(correlation.current().tenant_id)
        metrics.tokens(tenant, model, "prompt").inc(usage.prompt_tokens)
        metrics.tokens(tenant, model, "completion").inc(usage.completion_tokens)
        return usage.total_tokens

    async def _parsed(
        self,
        provider: ChatProvider,
        model: str,
        request: ChatRequest,
        completion: ChatCompletion,
    ) -> tuple[ParsedAnswer | None, int]:
        """The answer, after one repair request if the first was malformed (None if both are)."""
        try:
            return parse_answer(completion.text), 0
        except MalformedOutput as problem:
            log.warning("malformed answer from %s: %s; asking once more", provider.name, problem)
            repair = ChatRequest(
                [
                    *request.messages,
                    ChatMessage("assistant", completion.text),
                    ChatMessage("user", repair_instruction(str(problem))),
                ],
                request.response_schema,
                max_output_tokens=request.max_output_tokens,
            )
        try:
            repaired = await provider.complete(repair)
        except ProviderError as error:
            log.warning("repair request to %s failed: %s", provider.name, error.kind)
            return None, 0
        tokens = self._account(model, repaired)
        try:
            return parse_answer(repaired.text), tokens
        except MalformedOutput as problem:
            log.warning("repaired answer from %s still malformed: %s", provider.name, problem)
            return None, tokens

    def _generation(
        self, answer: ParsedAnswer, completion: ChatCompletion, total_tokens: int, model: str
    ) -> pb.Generation:
        usage = completion.usage
        return pb.Generation(
            reply_text=answer.reply,
            intent=answer.intent,
            confidence=answer.confidence,
            actions=[
                conversation_pb2.Action(type=action.type, params=_struct(action.params))
                for action in answer.actions
            ],
            usage=pb.Usage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=total_tokens - usage.prompt_tokens,
                total_tokens=total_tokens,
            ),
            model=model,
            entities=_struct(answer.entities),
        )

    async def _cached(self, tenant_id: str, key: str) -> pb.Generation | None:
        raw = await self._cache.get(tenant_id, key)
        if raw is None:
            return None
        generation = pb.Generation()
        generation.ParseFromString(raw)
        generation.usage.Clear()
        return generation

    async def _replay(self, generation: pb.Generation) -> AsyncIterator[str | pb.Generation]:
        for index, word in enumerate(generation.reply_text.split(" ")):
            yield word if index == 0 else f" {word}"
        yield generation

    async def _offline_events(
        self, prompt: pb.Prompt, degraded: bool
    ) -> AsyncIterator[str | pb.Generation]:
        generation = self._offline.generate(prompt)
        generation.degraded = degraded
        async for event in self._replay(generation):
            yield event
