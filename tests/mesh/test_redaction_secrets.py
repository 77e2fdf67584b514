"""Secret redaction (`redact_secrets`, `redact`): what each rule removes, and what it must leave
alone (ids, dates, durations, paths, prose)."""

import base64
import secrets
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.mesh.redaction import looks_random, redact, redact_secrets

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwidGlkIjoiZGVtbyJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
BASIC = base64.b64encode(b"meta:hunter2").decode()
AZURE_KEY_HEX = "0123456789abcdef0123456789abcdef"
STORAGE_KEY = "Zm9vYmFyYmF6cXV4Tm9ydGhXaW5kMTIzNDU2Nzg5MEFCQ0RFRkdISUpLTE1OT1BRUg=="

SECRETS = [
    # JWTs, alone or as a bearer token, signed or not
    ("jwt", f"token {JWT} expired", "token [jwt] expired"),
    ("jwt", f"Authorization: Bearer {JWT}", "Authorization: Bearer [jwt]"),
    ("jwt", "unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end", "unsigned [jwt] end"),
    # bearer and basic credentials
    ("bearer", "Authorization: Bearer abcdefghijklmnopqrstuvwx", "Authorization: Bearer ***"),
    ("bearer", "authorization=bearer AbC.dEf-123_456~789+", "authorization=bearer ***"),
    ("bearer", "protocols metaagent.handoff.v1, bearer.opaque-token-1234567", None),
    ("basic", f"Authorization: Basic {BASIC}", "Authorization: Basic ***"),
    # connection strings and key=value secrets
    (
        "azure-storage",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AbC+dEf/123==;"
        "EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;"
        "EndpointSuffix=core.windows.net",
    ),
    (
        "service-bus",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=Zm9vYmFy+/abc=",
        "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=***",
    ),
    (
        "sas",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&ss=b&sig=AbC%2Bdef%3D&se=2030",
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&ss=b&sig=***&se=2030",
    ),
    (
        "sas",
        "SharedAccessSignature=sr=https%3A%2F%2Fns&sig=abc%2Bdef&se=1700000000",
        "SharedAccessSignature=***&sig=***&se=1700000000",
    ),
    (
        "sql",
        "Server=tcp:db.database.windows.net,1433;User ID=app;Password=S3cr3t!;Encrypt=true",
        "Server=tcp:db.database.windows.net,1433;User ID=app;Password=***;Encrypt=true",
    ),
    (
        "sql",
        "Host=db;Username=app;pwd=hunter2;Database=x",
        "Host=db;Username=app;pwd=***;Database=x",
    ),
    ("header", "api-key: 3f2b9c0d77e1", "api-key: ***"),
    ("header", "Ocp-Apim-Subscription-Key: abcd1234", "Ocp-Apim-Subscription-Key: ***"),
    (
        "json",
        '{"password": "hunter2", "client_secret": "x~y"}',
        '{"password": "***", "client_secret": "***"}',
    ),
    (
        "query",
        "GET /cb?code=1&access_token=abc.def&state=2",
        "GET /cb?code=1&access_token=***&state=2",
    ),
    ("env", "JWT_SECRET=dev-secret-value", "JWT_SECRET=***"),
    # passwords in URLs
    (
        "url",
        "postgresql://meta:s3cret@db.internal:5432/metaagent",
        "postgresql://meta:***@db.internal:5432/metaagent",
    ),
    ("url", "redis://:p4ss@cache:6379/0 unavailable", "redis://:***@cache:6379/0 unavailable"),
    (
        "url",
        "mongodb+srv://u:p%40ss@cluster.example.net/db",
        "mongodb+srv://u:***@cluster.example.net/db",
    ),
    # provider keys
    ("openai", "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123 leaked", "key [api-key] leaked"),
    ("openai", "OPENAI key sk-0123456789abcdefABCDEF", "OPENAI key [api-key]"),
    ("openai", "no digit sk-abcdefghijklmnopqrstuvwx", "no digit [api-key]"),
    ("github", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[api-key]"),
    ("aws", "AKIAIOSFODNN7EXAMPLE in use", "[api-key] in use"),
    # long random tokens
    ("hex", f"azure openai key {AZURE_KEY_HEX}", "azure openai key [token]"),
    ("hex", f"digest {AZURE_KEY_HEX.upper() * 2}.", "digest [token]."),
    ("hex", f"claim relay-{AZURE_KEY_HEX}", "claim relay-[token]"),
    ("base64", f"storage key {STORAGE_KEY}", "storage key [token]"),
    ("base64", "webhook secret q7Xv2LmN9pRt4ZbK8sWd3FhJ6yGc1VeA0uTo5", "webhook secret [token]"),
    # private keys
    (
        "pem",
        "cert -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc==\n"
        "-----END RSA PRIVATE KEY----- loaded",
        "cert [private-key] loaded",
    ),
]


@pytest.mark.parametrize(("rule", "text", "expected"), SECRETS, ids=[s[0] for s in SECRETS])
def test_secrets_are_replaced(rule: str, text: str, expected: str | None) -> None:
    redacted = redact_secrets(text)
    if expected is not None:
        assert redacted == expected
    assert redacted != text, rule
    assert redact(text) == redact(redacted), "redact also covers secrets"


KEPT = [
    # our ids: correlation ids, UUIDs (digit-heavy ones too), tenant and session ids
    "corr-1234 corr-42 relay-worker-1 s-9 demo-tenant",
    "turn 5b4c7f8e-2f0a-4c55-9d3b-6a1f0e8c2d71 stored",
    "ids 12345678-1234-4234-9234-123456789012,00000000-0000-0000-0000-000000000000",
    "InstrumentationKey=12345678-1234-1234-1234-123456789abc;IngestionEndpoint=https://x/",
    "messageId 6F9619FF-8B86-D011-B42D-00C04FC964FF dead-lettered",
    # dates, times, durations, numbers
    "cita el 2024-01-15 10:30 en tienda, 2024-11-03T10:30:00.123+00:00",
    "took 1234.56ms, grace 2.5s, retry 3/4 in 0.40s, 12 unidades a 189.99 EUR",
    "listening on 10.244.12.123:50051 and 0.0.0.0:8080",
    # words that name secrets without holding one
    "Basic configuration completed for tenant demo",
    "bearer authentication failed",
    "invalid token: the header names no kid",
    "fencing token 12 is stale; tokens=120 max_output_tokens=300",
    "SharedAccessKeyName=RootManageSharedAccessKey",
    "https://host.example:8443/x?page=2",
    "token: expired",
    # code, paths, identifiers
    "/metaagent.orchestrator.v1.OrchestratorService/Process",
    'File "/work/main/.venv/lib/python3.11/site-packages/grpc/aio/_call.py", line 327',
    "/Users/JohnSmith/Projects/MetaAgent2/services/mesh/logs.py",
    "OrchestratorServiceServicerAsyncStubV2 MetaAgent2ServicesRetrievalStoresLocal",
    "HTTPServerErrorXMLParserJSONDecodeError2 raised",
    "text-embedding-3-small gpt-4o-mini-2024-07-18 task-12345 disk-usage",
    "http POST /v2/tenants/demo/knowledge/5b4c7f8e-2f0a-4c55-9d3b-6a1f0e8c2d71 200",
]


@pytest.mark.parametrize("text", KEPT)
def test_ids_dates_and_prose_are_kept(text: str) -> None:
    assert redact(text) == text


def test_a_url_without_password_keeps_its_user_for_the_secret_rules() -> None:
    assert redact_secrets("https://user@host.example/path") == "https://user@host.example/path"
    assert redact("https://user@host.example/path") == "https://[email]/path"  # looks like one


def test_short_text_without_digits_or_markers_is_returned_as_is() -> None:
    text = "hand-over delivered"
    assert redact(text) is text


@given(st.uuids())
def test_uuids_survive_wherever_they_are(value: uuid.UUID) -> None:
    for form in (str(value), str(value).upper()):
        for text in (form, f"corr {form} failed", f"id={form};", f"[{form}]", f"{form}/{form}"):
            assert redact(text) == text


@given(st.from_regex(r"\A[a-z]{1,12}-[0-9]{1,8}\Z"))
def test_prefixed_short_ids_survive(value: str) -> None:
    assert redact(f"correlation {value} done") == f"correlation {value} done"


@given(st.binary(min_size=16, max_size=64))
def test_hex_tokens_of_32_or_more_go(raw: bytes) -> None:
    token = raw.hex()
    mixed = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
    assert (redact(f"key {token} used") == "key [token] used") is mixed


def test_random_tokens_go_almost_always() -> None:
    tokens = [secrets.token_urlsafe(32) for _ in range(500)] + [
        base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(500)
    ]
    missed = [t for t in tokens if t in redact(f"secret {t} used")]
    assert len(missed) <= 5, missed


@pytest.mark.parametrize(
    ("token", "random"),
    [
        ("F3tTHAPyQ-wncMpbv5XHldR6KcBQJ0VPAhIPdA5IHnM", True),
        ("MetaAgent2ServicesRetrievalStoresLocal", False),
        ("abcdefghijklmnopqrstuvwxyz0123456789", False),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123", False),
        ("aA1" * 16, False),
    ],
)
def test_looks_random(token: str, random: bool) -> None:
    assert looks_random(token) is random


def test_redact_removes_secrets_and_personal_data_together() -> None:
    text = (
        "user ana.perez@example.com (+34 612 345 678) sent Bearer sk-proj-AbCdEfGhIjKl0123456789 "
        "via postgresql://app:pw@db/x"
    )
    assert redact(text) == "user [email] ([phone]) sent Bearer *** via postgresql://app:***@db/x"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "filler", ["a", "A1", "1 ", "+3", "=", "eyJa.", "key=", "://a:b", "-" * 8 + "BEGIN "]
)
def test_long_adversarial_text_is_redacted_in_linear_time(filler: str) -> None:
    text = filler * 200_000
    assert len(redact(text)) > 0
