"""Actions: the registry of action types (a JSON schema each, whether it moves money or needs
a confirmation turn) and the validation of what a model proposes, before anything is
persisted or published.

    confirmation = ConfirmationState.from_session(session, tenant, user_text)
    result = validate_actions(generation.actions, tenant, confirmation)
    result.actions    # to persist and publish (normalised params)
    result.dropped    # to audit: DroppedAction.audit() -> {index, type, reason, detail, path}
"""

from services.orchestrator.actions.registry import REGISTRY, ActionSpec, ParamError, spec_for
from services.orchestrator.actions.validation import (
    ConfirmationState,
    DroppedAction,
    DropReason,
    KeptAction,
    Offer,
    ValidationResult,
    is_confirmation_gate,
    is_explicit_yes,
    normalise_params,
    validate_actions,
)

__all__ = [
    "REGISTRY",
    "ActionSpec",
    "ConfirmationState",
    "DropReason",
    "DroppedAction",
    "KeptAction",
    "Offer",
    "ParamError",
    "ValidationResult",
    "is_confirmation_gate",
    "is_explicit_yes",
    "normalise_params",
    "spec_for",
    "validate_actions",
]
