"""schemathesis against the gateway's own OpenAPI document, with the real mesh behind it: no
request it generates, valid or not, with a platform admin's token or with none, gets a server
error, an undocumented status code or content type, or a body off the documented schema."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.threaded_gateway import RunningGateway, gateway_in_thread

pytestmark = pytest.mark.timeout(600)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


@pytest.fixture(scope="module")
def running_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_in_thread(Path(tmp_path_factory.mktemp("fuzz"))) as running:
        yield running


def _operations(running: RunningGateway) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{running.base_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda mode: mode.value)
@pytest.mark.parametrize("authenticated", [True, False], ids=["admin", "anonymous"])
def test_no_generated_request_breaks_the_contract(
    running_gateway: RunningGateway, mode: GenerationMode, authenticated: bool
) -> None:
    headers = running_gateway.headers() if authenticated else {}
    operations = _operations(running_gateway)
    assert "/v2/agents/meta-agent/process" in {op.path for op in operations}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES[mode] if authenticated else 5,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=running_gateway.base_url, headers=headers, checks=CHECKS, timeout=30
            )

        try:
            call()
        except Unsatisfiable:
            # no invalid variant of this operation's inputs exists (nothing to break)
            assert mode is GenerationMode.NEGATIVE, operation.label
