"""The JSON log formatter: ids on every line, trace and span ids, and redaction of the message,
the extra fields and the exception text (never of the ids it adds itself)."""

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.mesh import correlation
from services.mesh.logs import VERBATIM, JsonFormatter

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TOKEN = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"
EMAIL = "ana.perez+shop@gmail.com"
PHONE = "+34 612 345 678"
CONNECTION = (
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0+/="
)


def _record(msg: str = "hello", *args: Any, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("metaagent.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def _format(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter("llm").format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


@pytest.fixture
def bound_call() -> Iterator[correlation.CallContext]:
    call = correlation.CallContext(
        correlation_id="5b4c7f8e-2f0a-4c55-9d3b-6a1f0e8c2d71", tenant_id="demo", session_id="s-9"
    )
    with correlation.bound(call):
        yield call


def test_a_line_carries_the_call_ids(bound_call: correlation.CallContext) -> None:
    entry = _format(_record("turn %s stored", "t-1"))
    assert entry["msg"] == "turn t-1 stored"
    assert (entry["service"], entry["level"], entry["logger"]) == ("llm", "info", "metaagent.test")
    assert entry["ts"].endswith("+00:00")
    assert (entry["correlationId"], entry["tenantId"], entry["sessionId"]) == (
        bound_call.correlation_id,
        "demo",
        "s-9",
    )


def test_no_trace_ids_without_a_span() -> None:
    entry = _format(_record())
    assert "traceId" not in entry and "spanId" not in entry


def test_the_current_span_names_the_trace() -> None:
    context = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    with trace.use_span(NonRecordingSpan(context)):
        entry = _format(_record())
    assert entry["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["spanId"] == "00f067aa0ba902b7"


def test_a_recording_span_of_the_sdk_names_the_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("call") as span:
        entry = _format(_record())
    context = span.get_span_context()
    assert entry["traceId"] == format(context.trace_id, "032x")
    assert entry["spanId"] == format(context.span_id, "016x")


def test_without_a_span_the_callers_traceparent_names_the_trace() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with correlation.bound(correlation.CallContext(traceparent=traceparent)):
        entry = _format(_record())
    assert entry["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "spanId" not in entry
    with correlation.bound(correlation.CallContext(traceparent="garbage")):
        assert "traceId" not in _format(_record())


def test_the_message_is_redacted() -> None:
    entry = _format(_record("mail %s phone %s key %s", EMAIL, PHONE, TOKEN))
    assert entry["msg"] == "mail [email] phone [phone] key [api-key]"


def test_every_extra_field_is_redacted() -> None:
    class Failure:
        def __str__(self) -> str:
            return f"bus refused {CONNECTION}"

    entry = _format(
        _record(
            "dead-lettered",
            error=f"AuthError: {CONNECTION}",
            recipients=[EMAIL, "kept"],
            headers={"authorization": f"Bearer {TOKEN}", "count": 3},
            failure=Failure(),
            attempts=5,
            ratio=0.5,
            flag=True,
            nothing=None,
        )
    )
    line = json.dumps(entry)
    for secret in (TOKEN, EMAIL, "c2VjcmV0"):
        assert secret not in line
    assert entry["error"].endswith("SharedAccessKeyName=k;SharedAccessKey=***")
    assert entry["recipients"] == ["[email]", "kept"]
    assert entry["headers"] == {"authorization": "Bearer ***", "count": 3}
    assert entry["failure"].startswith("bus refused Endpoint=sb://")
    assert (entry["attempts"], entry["ratio"], entry["flag"], entry["nothing"]) == (
        5,
        0.5,
        True,
        None,
    )


def test_the_exception_and_stack_are_redacted() -> None:
    try:
        raise ValueError(f"could not reach postgresql://app:s3cret@db/x for {EMAIL}")
    except ValueError:
        record = logging.LogRecord(
            "metaagent.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    record.stack_info = f"Stack (most recent call last):\n  token={TOKEN}"
    entry = _format(record)
    assert "ValueError: could not reach postgresql://app:***@db/x for [email]" in entry["exc"]
    assert "s3cret" not in entry["exc"] and EMAIL not in entry["exc"]
    assert TOKEN not in entry["stack"]


def test_the_formatters_own_fields_are_written_as_they_are() -> None:
    hex_id = "relay-0123456789abcdef0123456789abcdef"
    context = SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(1))
    call = correlation.CallContext(correlation_id=hex_id, tenant_id="t-1", session_id="s-1")
    with correlation.bound(call), trace.use_span(NonRecordingSpan(context)):
        entry = _format(
            _record(
                "rpc %s", "/x", rpc="/metaagent.llm.v1.LlmService/Generate", code="OK", reason=""
            )
        )
    assert entry["correlationId"] == hex_id
    assert entry["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["rpc"] == "/metaagent.llm.v1.LlmService/Generate"
    assert {"correlationId", "tenantId", "sessionId", "traceId", "spanId"} <= VERBATIM
    assert f"id {hex_id}" != _format(_record("id %s", hex_id))["msg"], "free text is redacted"


@given(st.uuids(), st.from_regex(r"\Acorr-[0-9]{1,12}\Z"))
def test_ids_in_messages_and_extras_survive(value: Any, corr: str) -> None:
    text = str(value)
    entry = _format(
        _record("message %s of %s dead-lettered", text, corr, messageId=text, eventIds=[text])
    )
    assert entry["msg"] == f"message {text} of {corr} dead-lettered"
    assert entry["messageId"] == text and entry["eventIds"] == [text]


def test_a_logged_call_with_customer_data_leaves_none_of_it() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gateway"))
    logger = logging.getLogger("metaagent.test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        logger.info("process text %r", f"soy {EMAIL}, llámame al {PHONE}, clave {TOKEN}")
        logger.warning("bus down", extra={"error": CONNECTION})
        try:
            raise RuntimeError(f"Authorization: Bearer {TOKEN}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 3
    for secret in (EMAIL, "612 345 678", TOKEN, "c2VjcmV0"):
        assert secret not in output
