"""Removing personal data and secrets from text that leaves a tenant's scope (global documents,
logs).

`scrub_pii` replaces email addresses, IBANs, payment card numbers (Luhn-valid) and phone
numbers (9 to 15 digits) with placeholders. It is a safety net for text the platform shares,
not a guarantee: names and street addresses are not recognised. Dates, IPv4 addresses and
digits ending an id (`corr-123456789`, `SKU-4111111111111111`) are not phone or card numbers.

`redact_secrets` replaces credentials: JWTs, `Bearer`/`Basic` credentials, the secret parts of
connection strings (`AccountKey=`, `SharedAccessKey=`, `Password=`, `sig=`, `api-key: ...`),
the password of a URL (`postgresql://user:***@host`), provider API keys (`sk-...`, `ghp_...`,
`AKIA...`), PEM private keys, and long random-looking tokens (32 or more hex or base64
characters). `redact` does both, and is what every log line goes through (services.mesh.logs).

UUIDs (our correlation, turn and action ids) are kept whole: the heuristic rules (long tokens,
phone and card numbers) never look inside one. Secrets named by their context (`Password=`,
`Bearer `, a URL's password) are replaced even when they look like a UUID.
"""

import base64
import binascii
import functools
import math
import re
from collections import Counter
from collections.abc import Callable

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+")
IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
PHONE = re.compile(r"(?<![\w.])(?:\+|\()?\d(?:[\s().-]{0,2}\d){8,14}(?![\w.]?\d)")

UUID = re.compile(
    r"(?<![0-9A-Za-z])([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"(?![0-9A-Za-z])"
)
PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.S,
)
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
BEARER = re.compile(r"\b(Bearer|Basic)(\s+|\.)([A-Za-z0-9._~+/-]{8,}=*)", re.I)
URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):[^\s@/]+@")
SECRET_KEYS = (
    r"AccountKey|SharedAccessKey|SharedAccessSignature|Password|Passwd|Pwd|sig|"  # noqa: S105
    r"client[_-]?secret|secret|api[_-]?key|subscription[_-]?key|"
    r"(?:access|refresh|id|auth)[_-]?token|token"
)
SECRET_VALUE = re.compile(
    rf"(?<![A-Za-z0-9])({SECRET_KEYS})([\"']?\s*[=:]\s*[\"']?)[^;&\s\"',}}]+", re.I
)
PROVIDER_KEY = re.compile(
    r"\b(?:sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{10,})"  # Slack
)
HEX_TOKEN = re.compile(r"(?<![A-Za-z0-9])[0-9a-fA-F]{32,}(?![A-Za-z0-9])")
TOKEN = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/_=-])")

_MAYBE_SECRET = re.compile(r"[0-9@=:]|[Bb](?:earer|asic)|BEARER|BASIC|-----BEGIN|eyJ|sk-")
"""What every rule needs, so text without any (most short log messages) is returned as it is
after one scan. The gap: a token of 40 or more base64 characters without a digit (1 in 1000
random 32-byte tokens) goes unnoticed in text that has no digit, `@`, `=` or `:` either."""
_KEY_HINTS = ("key", "secret", "pass", "pwd", "sig", "token")
_PROVIDER_HINTS = ("sk-", "gh", "github_pat_", "AKIA", "ASIA", "xox")
_NO_DIGITS = str.maketrans("", "", "0123456789")
_MIN_TOKEN = 32
_MIN_BEARER = 16
_MAX_JUDGED = 256
_WORDS = frozenset({"token", "secret", "sig"})
_CACHED_LENGTH = 256
"""`redact` remembers its answers for this many characters or fewer (log messages repeat)."""


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _suffix_of_id(match: re.Match[str]) -> bool:
    """Whether the digits end an id such as `corr-123456789` or `SKU-4111111111111111`."""
    start = match.start()
    return start >= 2 and match.string[start - 1] == "-" and match.string[start - 2].isalnum()


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[card]" if _luhn_valid(digits) and not _suffix_of_id(match) else match.group()


def _phone(match: re.Match[str]) -> str:
    found = match.group()
    if ISO_DATE.match(found) or IPV4.fullmatch(found) or _suffix_of_id(match):
        return found
    return "[phone]"


def scrub_pii(text: str) -> str:
    """`text` with emails, IBANs, card numbers and phone numbers replaced by placeholders."""
    if "@" in text:
        text = EMAIL.sub("[email]", text)
    digits = len(text) - len(text.translate(_NO_DIGITS))
    if digits >= 2:
        text = IBAN.sub("[iban]", text)
    if digits >= 9:  # the fewest a phone number has; a card number has 13
        text = CARD.sub(_card, text)
        text = PHONE.sub(_phone, text)
    return text


def looks_random(token: str) -> bool:
    """Whether a run of 32 or more base64 characters looks like a random token rather than an
    identifier or a path: both cases, each a fifth or more of the letters (CamelCase names have
    far fewer capitals), a digit (or, from 40 characters, each case 30 % or more), and at least
    4 bits of entropy per character. Only the first 256 characters are judged.

    Random base64 tokens pass 99.4 % of the time at 32 characters, 99.95 % at 43 or 44 (32
    bytes).
    """
    token = token[:_MAX_JUDGED]
    if token.lower() == token or token.upper() == token:
        return False  # one case only (cheap checks first: paths are lower case)
    counts = Counter(token)
    upper = lower = digits = 0
    for char, count in counts.items():
        if char.isupper():
            upper += count
        elif char.islower():
            lower += count
        elif char.isdigit():
            digits += count
    balance = min(upper, lower) / (upper + lower)
    if balance < 0.2 or (not digits and (len(token) < 40 or balance < 0.3)):
        return False
    length = len(token)
    entropy = -sum(n / length * math.log2(n / length) for n in counts.values())
    return entropy >= 4.0


def _hex_token(match: re.Match[str]) -> str:
    found = match.group()
    has_digit = any(c.isdigit() for c in found)
    has_letter = any(c.isalpha() for c in found)
    return "[token]" if has_digit and has_letter else found


def _token(match: re.Match[str]) -> str:
    """A run of 32 or more base64 characters: a random-looking token goes whole; otherwise only
    the hex runs of 32 or more inside it (`relay-<hex>`, `cache/<sha256>`)."""
    found = match.group()
    if looks_random(found.rstrip("=")):
        return "[token]"
    return HEX_TOKEN.sub(_hex_token, found)


def _credential(match: re.Match[str]) -> str:
    """`Bearer <token>` when the token has 16 characters or more (not "bearer
    authentication"); `Basic <value>` when the value is base64 of `user:password` (not "Basic
    configuration")."""
    scheme, separator, value = match.groups()
    if scheme.lower() == "bearer":
        secret = len(value) >= _MIN_BEARER
    else:
        try:
            secret = b":" in base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            secret = False
    return f"{scheme}{separator}***" if secret else match.group()


def _secret_value(match: re.Match[str]) -> str:
    """`key=value` always; `key: value` when quoted (JSON, YAML) or when the key is no ordinary
    word: "Password: x" and "api-key: x" go, "invalid token: the header names no kid" stays."""
    key, separator = match.group(1), match.group(2)
    if "=" in separator or '"' in separator or "'" in separator or key.lower() not in _WORDS:
        return f"{key}{separator}***"
    return match.group()


def redact_secrets(text: str) -> str:
    """`text` without credentials: the named secrets first, then the long random tokens (UUIDs
    excepted). Personal data is left; `redact` removes both."""
    if not _MAYBE_SECRET.search(text):
        return text
    return _outside_uuids(_named_secrets(text), _random_tokens)


def redact(text: str) -> str:
    """`text` without secrets or personal data: what a log line may carry."""
    if not _MAYBE_SECRET.search(text):
        return text
    if len(text) <= _CACHED_LENGTH:
        return _redact_short(text)
    return _redact(text)


def _redact(text: str) -> str:
    return _outside_uuids(_named_secrets(text), _heuristics)


_redact_short = functools.lru_cache(maxsize=4096)(_redact)


def _named_secrets(text: str) -> str:
    """Each rule runs only when the text holds what it needs (substring tests are ~20 times
    cheaper than a regex scan)."""
    if "-----BEGIN" in text:
        text = PRIVATE_KEY.sub("[private-key]", text)
    if "eyJ" in text:
        text = JWT.sub("[jwt]", text)
    lower = text.lower()
    if "bearer" in lower or "basic" in lower:
        text = BEARER.sub(_credential, text)
    if "://" in text and "@" in text:
        text = URL_PASSWORD.sub(r"\1:***@", text)
    if ("=" in text or ":" in text) and any(hint in lower for hint in _KEY_HINTS):
        text = SECRET_VALUE.sub(_secret_value, text)
    if any(hint in text for hint in _PROVIDER_HINTS):
        text = PROVIDER_KEY.sub("[api-key]", text)
    return text


def _random_tokens(text: str) -> str:
    return TOKEN.sub(_token, text) if len(text) >= _MIN_TOKEN else text


def _heuristics(text: str) -> str:
    return scrub_pii(_random_tokens(text))


def _outside_uuids(text: str, rules: Callable[[str], str]) -> str:
    """`rules` applied to the text between the UUIDs of `text`, the UUIDs kept as they are."""
    if "-" not in text or not UUID.search(text):
        return rules(text)
    parts = UUID.split(text)  # the captured UUIDs at the odd positions
    return "".join(part if n % 2 else rules(part) for n, part in enumerate(parts))
