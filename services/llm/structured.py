"""The structure every model answer must have, its parsing, and streaming its reply text.

Models answer with one JSON object (strict JSON-schema structured output where the endpoint
supports it): `reply` first, so that the reply text can be streamed while the rest arrives,
then `intent`, `confidence`, `actions` and `entities`. Strict schemas cannot hold free-form
objects, so action parameters and entities travel as JSON-encoded strings and are decoded here.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Any

GENERATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reply": {"type": "string", "description": "The message to the customer."},
        "intent": {"type": "string", "description": "One of the tenant's intents, or other."},
        "confidence": {"type": "number", "description": "0 to 1: how sure the intent is."},
        "actions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "params_json": {"type": "string", "description": "A JSON object."},
                },
                "required": ["type", "params_json"],
                "additionalProperties": False,
            },
        },
        "entities_json": {
            "type": "string",
            "description": "A JSON object of slots learnt this turn (product, size, ...).",
        },
    },
    "required": ["reply", "intent", "confidence", "actions", "entities_json"],
    "additionalProperties": False,
}


class MalformedOutput(ValueError):
    """The model's answer does not have the structure above; the message says what is wrong."""


@dataclass(frozen=True)
class ProposedAction:
    type: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ParsedAnswer:
    reply: str
    intent: str
    confidence: float
    actions: list[ProposedAction] = field(default_factory=list)
    entities: dict[str, Any] = field(default_factory=dict)


def _object(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedOutput(f"{what} is not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise MalformedOutput(f"{what} must be a JSON object")
    return value


def parse_answer(text: str) -> ParsedAnswer:
    """The answer in `text`, or MalformedOutput naming the first problem found."""
    answer = _object(_strip_fences(text), "the answer")
    try:
        json.dumps(answer, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedOutput("the answer holds an unpaired surrogate escape") from None
    reply = answer.get("reply")
    if not isinstance(reply, str) or not reply.strip():
        raise MalformedOutput("reply must be a non-empty string")
    intent = answer.get("intent", "")
    if not isinstance(intent, str):
        raise MalformedOutput("intent must be a string")
    confidence = answer.get("confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise MalformedOutput("confidence must be a number")
    if not math.isfinite(confidence):
        raise MalformedOutput("confidence must be finite")
    raw_actions = answer.get("actions", [])
    if not isinstance(raw_actions, list):
        raise MalformedOutput("actions must be a list")
    actions = []
    for n, item in enumerate(raw_actions):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            raise MalformedOutput(f"actions[{n}] must be an object with a string type")
        params = item.get("params_json", item.get("params", {}))
        if isinstance(params, str):
            params = _object(params, f"actions[{n}].params_json")
        if not isinstance(params, dict):
            raise MalformedOutput(f"actions[{n}].params_json must be a JSON object")
        actions.append(ProposedAction(item["type"], params))
    entities = answer.get("entities_json", answer.get("entities", {}))
    if isinstance(entities, str):
        entities = _object(entities, "entities_json")
    if not isinstance(entities, dict):
        raise MalformedOutput("entities_json must be a JSON object")
    return ParsedAnswer(
        reply.strip(), intent.strip(), min(max(float(confidence), 0.0), 1.0), actions, entities
    )


def _strip_fences(text: str) -> str:
    """Models without structured output sometimes wrap JSON in a Markdown code fence."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[1] if "\n" in stripped else ""
        stripped = stripped.rsplit("```", 1)[0]
    return stripped


def repair_instruction(problem: str) -> str:
    """The follow-up message of the one repair attempt."""
    return (
        f"Your previous answer was not valid: {problem}. Answer again with only the JSON "
        "object, with the keys reply, intent, confidence, actions and entities_json."
    )


REPLACEMENT = "\ufffd"


def _hex(digits: str) -> int | None:
    try:
        return int(digits, 16) if len(digits) == 4 else None
    except ValueError:
        return None


ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class ReplyStreamer:
    """Feeds on the raw JSON deltas of an answer and returns the new text of its `reply` string
    as soon as it arrives, decoding JSON escapes (also when split across deltas)."""

    KEY = '"reply"'

    def __init__(self) -> None:
        self._buffer = ""
        self._position = -1  # index in the buffer of the next character of the reply string
        self._done = False

    def feed(self, delta: str) -> str:
        self._buffer += delta
        if self._done:
            return ""
        if self._position < 0 and not self._find_start():
            return ""
        out: list[str] = []
        buffer, i = self._buffer, self._position
        while i < len(buffer):
            char = buffer[i]
            if char == '"':
                self._done = True
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            if i + 1 >= len(buffer):
                break
            code = buffer[i + 1]
            if code in ESCAPES:
                out.append(ESCAPES[code])
                i += 2
            elif code == "u":
                if i + 6 > len(buffer):
                    break
                decoded, i = self._unicode(buffer, i)
                if decoded is None:
                    break
                out.append(decoded)
            else:
                i += 2
        self._position = i
        return "".join(out)

    def _unicode(self, buffer: str, i: int) -> tuple[str | None, int]:
        """A `\\uXXXX` escape (a surrogate pair as one character); U+FFFD for a broken one."""
        unit = _hex(buffer[i + 2 : i + 6])
        if unit is None or 0xDC00 <= unit < 0xE000:
            return REPLACEMENT, i + 6
        if 0xD800 <= unit < 0xDC00:
            if i + 12 > len(buffer):
                return None, i
            low = _hex(buffer[i + 8 : i + 12]) if buffer[i + 6 : i + 8] == "\\u" else None
            if low is None or not 0xDC00 <= low < 0xE000:
                return REPLACEMENT, i + 6
            return chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)), i + 12
        return chr(unit), i + 6

    def _find_start(self) -> bool:
        key = self._buffer.find(self.KEY)
        if key < 0:
            return False
        rest = self._buffer[key + len(self.KEY) :]
        stripped = rest.lstrip()
        if not stripped.startswith(":"):
            return False
        value = stripped[1:].lstrip()
        if not value.startswith('"'):
            return False
        self._position = len(self._buffer) - len(value) + 1
        return True
