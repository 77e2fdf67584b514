"""Consent and erasure through the context service, with the contract's caller policy."""

from pathlib import Path

import grpc
import pytest
from metaagent.context.v1 import consent_pb2
from metaagent.context.v1 import context_service_pb2 as pb

from services.mesh import correlation
from services.mesh.clients import MeshClients
from tests.support.context_service import context_service


async def test_consent_and_erasure_over_grpc(state_dir: Path, tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'context.db'}"
    async with context_service(state_dir, store_url=store_url) as client_settings:
        gateway, speech = (
            MeshClients(client_settings, "gateway"),
            MeshClients(client_settings, "speech"),
        )
        call = correlation.CallContext(correlation_id="corr-consent", tenant_id="demo")
        try:
            with correlation.bound(call):
                granted = await gateway.context.GrantConsent(
                    pb.GrantConsentRequest(
                        user_id="alice",
                        kinds=[consent_pb2.CONSENT_KIND_VOICE_RECORDING],
                        source="ivr_prompt",
                    )
                )
                seen_by_speech = await speech.context.GetConsent(
                    pb.GetConsentRequest(user_id="alice")
                )
                with pytest.raises(grpc.aio.AioRpcError) as denied:
                    await speech.context.GrantConsent(
                        pb.GrantConsentRequest(
                            user_id="alice", kinds=[consent_pb2.CONSENT_KIND_DATA_LEARNING]
                        )
                    )
                erased = await gateway.context.EraseUser(pb.EraseUserRequest(user_id="alice"))
                after = await gateway.context.GetConsent(pb.GetConsentRequest(user_id="alice"))
                verified = await gateway.context.VerifyAudit(pb.VerifyAuditRequest())
        finally:
            await gateway.close()
            await speech.close()
    assert granted.consent.voice_recording_consent is True
    assert seen_by_speech.consent.voice_recording_consent is True
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert erased.consent_erased is True
    assert after.consent.voice_recording_consent is False
    assert (verified.valid, verified.entries_checked) == (True, 2)
