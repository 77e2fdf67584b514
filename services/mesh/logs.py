"""JSON logs, one object per line, each carrying the ids of the call that wrote it.

Every line goes through `redaction.redact`: the message, every extra field and the exception
text lose secrets (tokens, keys, connection-string passwords) and personal data (emails, phone
and card numbers, IBANs), whatever the level. The fields this formatter adds itself (the ids,
the timestamp) and the interceptor's `rpc`, `code` and `reason` are written as they are.
"""

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.mesh import correlation, tracing
from services.mesh.redaction import redact

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
VERBATIM = frozenset(
    {
        "ts",
        "level",
        "service",
        "pid",
        "logger",
        "correlationId",
        "tenantId",
        "sessionId",
        "traceId",
        "spanId",
        "rpc",
        "code",
        "reason",
    }
)
"""Fields written without redaction: ids and codes, never free text."""
_PLAIN = (bool, int, float, type(None))


def _clean(value: Any, depth: int = 0) -> Any:
    """`value` redacted: strings, the strings inside lists and mappings, and the text of any
    other object (what `json.dumps(default=str)` would have written)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, _PLAIN):
        return value
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, depth + 1) for item in value]
    if depth < 4 and isinstance(value, Mapping):
        return {redact(str(key)): _clean(item, depth + 1) for key, item in value.items()}
    return redact(str(value))


def _trace_ids(traceparent: str) -> tuple[str, str]:
    """The current span's trace and span ids in hex; without a recording span, the trace id of
    the caller's `traceparent` (a process that records nothing still names the trace)."""
    ids = tracing.current_ids()
    if ids is not None:
        return ids
    if traceparent and correlation.TRACEPARENT_PATTERN.match(traceparent):
        trace_id = traceparent[3:35]
        if trace_id.strip("0"):
            return trace_id, ""
    return "", ""


class JsonFormatter(logging.Formatter):
    """Formats a record as one redacted JSON object with the bound correlation and trace ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        call = correlation.current()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "pid": record.process,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if call.correlation_id:
            entry["correlationId"] = call.correlation_id
        if call.tenant_id:
            entry["tenantId"] = call.tenant_id
        if call.session_id:
            entry["sessionId"] = call.session_id
        trace_id, span_id = _trace_ids(call.traceparent)
        if trace_id:
            entry["traceId"] = trace_id
        if span_id:
            entry["spanId"] = span_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value if key in VERBATIM else _clean(value)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines tagged with `service`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
