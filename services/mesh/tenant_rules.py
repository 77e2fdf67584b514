"""What a tenant configuration must satisfy, shared by the context service (which stores it and
refuses anything else, whoever calls) and the gateway (which refuses a bad one before any call).

`tenant_config_violations` checks a `TenantConfig` message and returns one field violation per
bad field, named by its path in the message (`intents[0].action_types`,
`slot_prompts["size"].ask["es"]`); nothing here does I/O. The action types and slots the
platform knows are listed here rather than imported from the orchestrator (services share only
the contracts and this runtime); a test keeps the list equal to the orchestrator's registry.

`revision_mismatch` refuses a write conditioned on another revision than the stored one
(PutTenant.expected_revision, the gateway's If-Match), with one reason and one metadata shape
wherever it is decided.
"""

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from metaagent.common.v1 import tenant_pb2

from services.mesh.errors import FieldViolation, MeshError, failed_precondition

KNOWN_ACTION_TYPES: Final = frozenset(
    {
        "create_order",
        "create_ticket",
        "generate_video",
        "handoff_human",
        "payment_link",
        "schedule_post",
        "voice_call",
    }
)
"""Every action type the platform knows (the orchestrator's action registry)."""
SLOT_NAMES: Final = ("product", "quantity", "size", "address", "email", "phone", "order_id")
"""The slots an intent may require (tenant.proto, Intent.required_slots)."""
PROMPT_KEYS: Final = (*SLOT_NAMES, "confirmation")
"""The keys of TenantConfig.slot_prompts."""

LANGUAGE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}")
INTENT_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_NAME_CHARS: Final = 200
MAX_ADN_CHARS: Final = 32_000
MAX_SAFETY_POLICY_CHARS: Final = 16_000
MAX_TEMPLATE_CHARS: Final = 4_000
MAX_EXAMPLE_CHARS: Final = 500
MAX_ALLOWED_ACTIONS: Final = 64
MAX_INTENTS: Final = 200
MAX_EXAMPLES: Final = 200
MAX_INTENT_ACTIONS: Final = 16
MAX_FOLLOWS: Final = 32
MAX_DEDUP_WINDOW_SECONDS: Final = 86_400
MAX_DAILY_TOKEN_BUDGET: Final = 10**12
MAX_TURNS_PER_MINUTE: Final = 100_000


class _Violations:
    """Collects problems, at most one per field (later problems of a field are appended)."""

    def __init__(self) -> None:
        self._by_field: dict[str, list[str]] = {}

    def add(self, field: str, description: str) -> None:
        descriptions = self._by_field.setdefault(field, [])
        if description not in descriptions:
            descriptions.append(description)

    def result(self, prefix: str) -> list[FieldViolation]:
        return [
            FieldViolation(f"{prefix}{field}", "; ".join(descriptions))
            for field, descriptions in self._by_field.items()
        ]


def _key(value: str) -> str:
    """A map key in a field path: quoted, with quotes and backslashes escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'["{escaped}"]'


def _texts(problems: _Violations, where: str, texts: Mapping[str, str]) -> None:
    """A map of templates keyed by BCP-47 language."""
    for language, text in texts.items():
        if not LANGUAGE.fullmatch(language):
            problems.add(f"{where}{_key(language)}", "is not keyed by a BCP-47 language tag")
        elif len(text) > MAX_TEMPLATE_CHARS:
            problems.add(f"{where}{_key(language)}", f"exceeds {MAX_TEMPLATE_CHARS} characters")


def _action_types(problems: _Violations, where: str, types: Iterable[str]) -> None:
    for index, action_type in enumerate(types):
        if action_type not in KNOWN_ACTION_TYPES:
            known = ", ".join(sorted(KNOWN_ACTION_TYPES))
            problems.add(f"{where}[{index}]", f"is not an action type the platform knows ({known})")


def _intent(
    problems: _Violations,
    index: int,
    intent: tenant_pb2.Intent,
    names: list[str],
    allowed: set[str],
) -> None:
    where = f"intents[{index}]"
    if not INTENT_NAME.fullmatch(intent.name):
        problems.add(f"{where}.name", "must be 1-64 of [A-Za-z0-9_.-], starting with a letter")
    elif names.index(intent.name) != index:
        problems.add(f"{where}.name", f"intent '{intent.name}' is defined twice")
    if len(intent.examples) > MAX_EXAMPLES:
        problems.add(f"{where}.examples", f"at most {MAX_EXAMPLES}")
    for number, example in enumerate(intent.examples):
        if not example.strip() or len(example) > MAX_EXAMPLE_CHARS:
            problems.add(
                f"{where}.examples[{number}]",
                f"must be 1-{MAX_EXAMPLE_CHARS} characters, not only spaces",
            )
    if len(intent.reply_template) > MAX_TEMPLATE_CHARS:
        problems.add(f"{where}.reply_template", f"exceeds {MAX_TEMPLATE_CHARS} characters")
    _texts(problems, f"{where}.reply_templates", intent.reply_templates)
    if len(intent.action_types) > MAX_INTENT_ACTIONS:
        problems.add(f"{where}.action_types", f"at most {MAX_INTENT_ACTIONS}")
    _action_types(problems, f"{where}.action_types", intent.action_types)
    outside = sorted({kind for kind in intent.action_types if kind in KNOWN_ACTION_TYPES} - allowed)
    if outside:
        problems.add(
            f"{where}.action_types",
            f"{', '.join(repr(kind) for kind in outside)} not in allowed_actions",
        )
    for number, slot in enumerate(intent.required_slots):
        if slot not in SLOT_NAMES:
            problems.add(
                f"{where}.required_slots[{number}]", f"must be one of {', '.join(SLOT_NAMES)}"
            )
    if len(intent.required_slots) > len(SLOT_NAMES):
        problems.add(f"{where}.required_slots", f"at most {len(SLOT_NAMES)}")
    if len(intent.follows) > MAX_FOLLOWS:
        problems.add(f"{where}.follows", f"at most {MAX_FOLLOWS}")
    strangers = [name for name in intent.follows if name not in names or name == intent.name]
    if strangers:
        problems.add(
            f"{where}.follows",
            "must name other intents of this configuration, not "
            + ", ".join(repr(name[:64]) for name in strangers),
        )


def _limits(problems: _Violations, config: tenant_pb2.TenantConfig) -> None:
    threshold = config.escalation_threshold
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        problems.add("escalation_threshold", "must be in [0, 1]")
    bounded = (
        ("dedup_window_seconds", config.dedup_window_seconds, MAX_DEDUP_WINDOW_SECONDS),
        ("daily_token_budget", config.daily_token_budget, MAX_DAILY_TOKEN_BUDGET),
        ("turns_per_minute", config.turns_per_minute, MAX_TURNS_PER_MINUTE),
    )
    for field, value, maximum in bounded:
        if not 0 <= value <= maximum:
            problems.add(field, f"must be between 0 and {maximum}")


def tenant_config_violations(
    config: tenant_pb2.TenantConfig, tenant_id: str, prefix: str = ""
) -> list[FieldViolation]:
    """Every bad field of `config` for the tenant `tenant_id`, one violation each, named by its
    path in the message behind `prefix` (e.g. "tenant."). Empty when the configuration is valid.

    `tenant_id` must be empty or the tenant's own; `language` may be empty (no default
    language), anything else must be a BCP-47 tag."""
    problems = _Violations()
    if config.tenant_id not in ("", tenant_id):
        problems.add("tenant_id", "must be the tenant's own id or empty")
    if not config.name.strip():
        problems.add("name", "is required")
    elif len(config.name) > MAX_NAME_CHARS:
        problems.add("name", f"exceeds {MAX_NAME_CHARS} characters")
    if config.language and not LANGUAGE.fullmatch(config.language):
        problems.add("language", "must be a BCP-47 language tag, e.g. es or es-CO")
    if len(config.adn) > MAX_ADN_CHARS:
        problems.add("adn", f"exceeds {MAX_ADN_CHARS} characters")
    if len(config.safety_policy) > MAX_SAFETY_POLICY_CHARS:
        problems.add("safety_policy", f"exceeds {MAX_SAFETY_POLICY_CHARS} characters")
    allowed = set(config.allowed_actions)
    if len(config.allowed_actions) > MAX_ALLOWED_ACTIONS:
        problems.add("allowed_actions", f"at most {MAX_ALLOWED_ACTIONS}")
    if len(allowed) < len(config.allowed_actions):
        problems.add("allowed_actions", "lists an action type twice")
    _action_types(problems, "allowed_actions", config.allowed_actions)
    if len(config.intents) > MAX_INTENTS:
        problems.add("intents", f"at most {MAX_INTENTS}")
    names = [intent.name for intent in config.intents]
    for index, intent in enumerate(config.intents):
        _intent(problems, index, intent, names, allowed)
    _limits(problems, config)
    for key, prompt in config.slot_prompts.items():
        where = f"slot_prompts{_key(key)}"
        if key not in PROMPT_KEYS:
            problems.add(where, f"must be keyed by one of {', '.join(PROMPT_KEYS)}")
            continue
        _texts(problems, f"{where}.ask", prompt.ask)
        _texts(problems, f"{where}.invalid", prompt.invalid)
    return problems.result(prefix)


TENANT_REVISION_MISMATCH: Final = "TENANT_REVISION_MISMATCH"
"""The ErrorInfo reason of a tenant write conditioned on a revision the tenant does not have."""


def revision_mismatch(tenant_id: str, current: int, expected: int | None = None) -> MeshError:
    """FAILED_PRECONDITION (TENANT_REVISION_MISMATCH) for a write conditioned on another
    revision (`expected`, when it was one number) than the tenant's `current` one (0: the
    tenant has no configuration); ErrorInfo metadata `currentRevision` (and
    `expectedRevision`)."""
    found = f"revision {current}" if current else "no configuration"
    wanted = f"revision {expected}" if expected is not None else "the revision this write expected"
    error = failed_precondition(
        f"tenant '{tenant_id}' has {found}, not {wanted}: read it again",
        TENANT_REVISION_MISMATCH,
    )
    error.metadata = {"currentRevision": str(current)}
    if expected is not None:
        error.metadata["expectedRevision"] = str(expected)
    return error
