"""Intent matching: similarity to the tenant's examples (any language), and the follow-up gate
(an intent with `follows` is only considered right after one of those intents)."""

from dataclasses import dataclass

from metaagent.common.v1 import conversation_pb2, tenant_pb2
from metaagent.llm.v1 import llm_service_pb2 as pb

from services.llm.offline.text import word_set
from services.mesh.text import content_words, fold

LEGACY_FOLLOWS = {"confirm_purchase": ("checkout_flow",)}
"""Tenants stored before Intent.follows existed: a bare "sí" only confirms a checkout."""


FILLER = word_set(
    "hola buenas hi hello hey gracias thanks thank please porfa favor vale ok okay pues bueno "
    "well todavia aun still yet just solo also tambien"
)
"""Words that say nothing about what the customer wants ("no, todavía no" is not an order
problem because an example says "todavía")."""


def _content(text: str) -> list[str]:
    return [word for word in content_words(text) if word not in FILLER]


def similarity(a: str, b: str) -> float:
    """Dice overlap of content words, with character trigrams to forgive inflections;
    greetings and fillers do not count."""
    words_a, words_b = _content(a) or fold(a).split(), _content(b) or fold(b).split()
    grams_a = {w[i : i + 3] for w in words_a for i in range(max(1, len(w) - 2))}
    grams_b = {w[i : i + 3] for w in words_b for i in range(max(1, len(w) - 2))}
    if not grams_a or not grams_b:
        return 0.0
    word_score = 2 * len(set(words_a) & set(words_b)) / (len(set(words_a)) + len(set(words_b)))
    gram_score = 2 * len(grams_a & grams_b) / (len(grams_a) + len(grams_b))
    return max(word_score, gram_score)


@dataclass(frozen=True)
class IntentMatch:
    intent: tenant_pb2.Intent
    score: float


def follows(intent: tenant_pb2.Intent) -> tuple[str, ...]:
    """The intents `intent` follows (empty: it may come at any time)."""
    return tuple(intent.follows) or LEGACY_FOLLOWS.get(intent.name, ())


def last_agent_intent(prompt: pb.Prompt) -> str:
    for turn in reversed(prompt.recent_turns):
        if turn.role == conversation_pb2.TURN_ROLE_AGENT:
            return turn.metadata.intent
    return ""


def best_example_score(text: str, intent: tenant_pb2.Intent) -> float:
    return max((similarity(text, example) for example in intent.examples), default=0.0)


def match_intent(
    prompt: pb.Prompt,
    threshold: float,
    *,
    also_allowed: frozenset[str] = frozenset(),
    exclude: frozenset[str] = frozenset(),
) -> IntentMatch | None:
    """The intent whose examples are closest to the user text, at least `threshold`. A
    follow-up intent is considered only right after one of the intents it follows (or when
    named in `also_allowed`, e.g. while it is still collecting slots); intents named in
    `exclude` never."""
    previous = last_agent_intent(prompt)
    best: IntentMatch | None = None
    for intent in prompt.tenant.intents:
        gate = follows(intent)
        if intent.name in exclude:
            continue
        if gate and previous not in gate and intent.name not in also_allowed:
            continue
        score = best_example_score(prompt.user_text, intent)
        if score >= threshold and (best is None or score > best.score):
            best = IntentMatch(intent, score)
    return best
