"""The offline responder: not an LLM, and it says so (`model: offline`).

It detects the customer's language, extracts slots (product, quantity, size, address, e-mail,
phone, order id) and remembers them across turns, routes by similarity to the tenant's intent
examples in any language, asks for missing or invalid slots, fills the tenant's reply templates
in the customer's language from retrieved catalogue fields and documents, and proposes the
intent's actions when the tenant allows them, money-moving ones only after an explicit
confirmation. Pure and deterministic, so it doubles as the degraded-mode engine and as a test
oracle.

- `language`: language detection, confirmations, requests for a person;
- `slots`: one extractor per slot, and their validation;
- `intents`: similarity and the follow-up gate;
- `replies`: templates and the platform's wording;
- `responder`: the turn.
"""

from services.llm.offline.intents import IntentMatch, match_intent, similarity
from services.llm.offline.responder import MODEL_NAME, OfflineResponder

__all__ = ["MODEL_NAME", "IntentMatch", "OfflineResponder", "match_intent", "similarity"]
