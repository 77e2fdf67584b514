"""Free-form JSON values (a turn's `metadata` and `contextHints`, action `params`, document
`metadata`, catalogue attributes) checked against what a `google.protobuf.Struct` carries.

A Struct holds JSON, but not all of it: a number is a double (an integer past 2^53 is rounded,
one past a double's range cannot be converted at all), NaN and infinity are not JSON and
cannot be stored as such, strings must be UTF-8, and protobuf parsers refuse messages nested
deeper than 100 (upb's limit, where one JSON object level costs three). `freeform_problem`
finds the first value that would not survive, naming where it is, so the gateway and the
catalogue parser refuse it as bad input instead of failing while converting or sending it.

MAX_DEPTH (32 levels of objects or arrays, the outermost object counting as one) is what the
deepest contract message carrying such a value still parses (search hits and the LLM prompt
carry document fields three messages down); tests/gateway/test_freeform_json.py keeps it so.
"""

import math
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import struct_pb2

MAX_DEPTH: Final = 32
"""Objects and arrays nested in one free-form value, the outermost counting as one."""
MAX_SAFE_INTEGER: Final = 2**53
"""The largest integer magnitude a double (a Struct number) holds exactly."""
_MAX_PATH_CHARS: Final = 120


@dataclass(frozen=True)
class FreeformProblem:
    """Why a value cannot be carried, and where: a path such as `a.b[2]` ("" for the value
    itself)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} {self.reason}" if self.path else f"the value {self.reason}"


def _step(path: str, key: str | int) -> str:
    if len(path) > _MAX_PATH_CHARS:
        return path  # already cut short with "…"
    step = f"[{key}]" if isinstance(key, int) else (f".{key}" if path else str(key))
    joined = path + step
    return joined if len(joined) <= _MAX_PATH_CHARS else joined[:_MAX_PATH_CHARS] + "…"


def freeform_problem(value: object, max_depth: int = MAX_DEPTH) -> FreeformProblem | None:
    """The first part of `value` (decoded JSON: dicts with string keys, lists, strings,
    numbers, booleans, None) a Struct cannot carry, or None when all of it fits. Iterative, so
    any depth is examined without recursion."""
    stack: list[tuple[object, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > max_depth:
                return FreeformProblem(path, f"is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return FreeformProblem(path, "has a key that is not a string")
                    if not _is_utf8(key):
                        return FreeformProblem(path, "has a key that is not valid Unicode")
                    stack.append((child, depth + 1, _step(path, key)))
            else:
                for index, child in enumerate(item):
                    stack.append((child, depth + 1, _step(path, index)))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                return FreeformProblem(
                    path, "is an integer beyond ±2^53 (send it as a string to keep every digit)"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                return FreeformProblem(path, "is not a finite number (NaN and Infinity)")
        elif isinstance(item, str):
            if not _is_utf8(item):
                return FreeformProblem(path, "is not valid Unicode")
        else:
            return FreeformProblem(path, "is not a JSON value")
    return None


def _is_utf8(text: str) -> bool:
    """False for a string with lone surrogates (JSON `"\\ud800"`), which UTF-8 cannot hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """`json_format.MessageToDict(struct)` for a Struct, the same values and errors, without the
    generic printer's descriptor walk (several times faster, and prompts convert a few a turn)."""
    return {key: _value_to_json(value) for key, value in struct.fields.items()}


def _value_to_json(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number):
            raise ValueError(
                "Fail to serialize Infinity for Value.number_value, which would parse as "
                "string_value"
            )
        if math.isnan(number):
            raise ValueError(
                "Fail to serialize NaN for Value.number_value, which would parse as string_value"
            )
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value_to_json(item) for item in value.list_value.values]
    return None  # null_value, or no kind set
