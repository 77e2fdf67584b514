"""The fast short-context and timestamp conversions agree with json_format and
`Timestamp.FromDatetime`, and fall back to them for anything else (same result, same error)."""

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from metaagent.common.v1 import conversation_pb2

from services.context.rows import (
    short_context_dict,
    short_context_into,
    short_context_values,
    timestamp,
)


def _short(**fields: Any) -> conversation_pb2.ShortContext:
    entities = fields.pop("entities", None)
    context = conversation_pb2.ShortContext(**fields)
    if entities is not None:
        context.entities.Clear()
        context.entities.update(entities)
    return context


SHORT_CONTEXTS = [
    conversation_pb2.ShortContext(),
    _short(summary="earlier"),
    _short(last_intent="checkout_flow"),
    _short(entities={}),
    _short(summary="", last_intent="", entities={}),
    _short(
        summary="user: hola\nagent: ¿qué tal? ✓",
        last_intent="product_inquiry",
        entities={
            "product": "zapatillas",
            "qty": 2,
            "price": 189.99,
            "big": 2**53,
            "negative": -0.5,
            "ok": True,
            "no": False,
            "nothing": None,
            "address": {"street": "Gran Vía", "number": 1, "tags": ["a", 1, None, {"x": []}]},
            "empty": {},
            "list": [],
            "": "empty key",
        },
    ),
    _short(entities={"deep": {"a": {"b": {"c": {"d": [[[{"e": 1}]]]}}}}}),
]


def _outcome(convert: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        result = convert()
    except Exception as error:  # the error itself is what is compared
        return ("error", type(error), str(error))
    if isinstance(result, conversation_pb2.ShortContext):
        return (
            "ok",
            result.SerializeToString(deterministic=True),
            result.HasField("entities"),
            result,
        )
    return ("ok", result)


@pytest.mark.parametrize("context", SHORT_CONTEXTS)
def test_short_contexts_convert_exactly_as_json_format_does(
    context: conversation_pb2.ShortContext,
) -> None:
    assert short_context_dict(context) == json_format.MessageToDict(context)
    text = json.dumps(json_format.MessageToDict(context))
    fast = _outcome(lambda: short_context_into(text, conversation_pb2.ShortContext()))
    assert fast == _outcome(lambda: json_format.Parse(text, conversation_pb2.ShortContext()))
    assert fast[3] == context


@pytest.mark.parametrize("replace_summary", [False, True])
@pytest.mark.parametrize("stored_summary", ["", "stored"])
@pytest.mark.parametrize("context", SHORT_CONTEXTS)
def test_stored_short_contexts_are_those_json_format_would_store(
    context: conversation_pb2.ShortContext, stored_summary: str, replace_summary: bool
) -> None:
    values = short_context_values(context, stored_summary, replace_summary=replace_summary)
    expected = json_format.MessageToDict(context)
    if not (replace_summary and context.summary):
        expected["summary"] = stored_summary
    if not expected["summary"]:
        del expected["summary"]
    assert values == expected
    text = json.dumps(values)
    assert _outcome(lambda: short_context_into(text, conversation_pb2.ShortContext())) == (
        _outcome(lambda: json_format.Parse(text, conversation_pb2.ShortContext()))
    )


def _nested(depth: int) -> str:
    return '{"entities": ' + '{"a": ' * depth + "1" + "}" * depth + "}"


UNEXPECTED_TEXTS = [
    "{}",
    "",
    "{",
    "null",
    "[]",
    '"summary"',
    "1",
    '{"last_intent": "proto name"}',
    '{"summary": "a", "last_intent": "both spellings", "lastIntent": "b"}',
    '{"summary": null}',
    '{"lastIntent": null}',
    '{"entities": null}',
    '{"summary": 1}',
    '{"summary": true}',
    '{"summary": ["a"]}',
    '{"entities": []}',
    '{"entities": "x"}',
    '{"entities": 1}',
    '{"unknown": 1}',
    '{"summary": "a", "unknown": {"x": 1}}',
    '{"summary": "a", "summary": "b"}',
    '{"entities": {"k": 1, "k": 2}}',
    '{"entities": {"k": {"x": 1, "x": 2}}}',
    '{"entities": {"nan": NaN, "inf": Infinity, "minus": -Infinity}}',
    '{"entities": {"huge": 1e400}}',
    '{"entities": {"huge": ' + "9" * 400 + "}}",
    '{"entities": {"lone": "\\ud800"}}',
    '{"summary": "\\ud800"}',
    '{"entities": {"a": [1, [2, [3, {"b": null}]]]}}',
    '{"entities": {}} trailing',
    '  {"summary": "spaces"}  ',
    _nested(20),
    _nested(40),
    _nested(48),
    _nested(49),
    _nested(50),
    _nested(60),
    '{"entities": {"a": ' + "[" * 60 + "]" * 60 + "}}",
]


@pytest.mark.parametrize("text", UNEXPECTED_TEXTS)
def test_anything_else_reads_or_fails_as_json_format_does(text: str) -> None:
    assert _outcome(lambda: short_context_into(text, conversation_pb2.ShortContext())) == (
        _outcome(lambda: json_format.Parse(text, conversation_pb2.ShortContext()))
    )


ZONES = [
    None,
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=23, minutes=59)),
    timezone(-timedelta(hours=23, minutes=59)),
    timezone(timedelta(seconds=7)),
    timezone(timedelta(minutes=1, microseconds=999_999)),
    timezone(-timedelta(seconds=1, microseconds=1)),
]


def _stamp(value: Any) -> tuple[Any, ...]:
    def slow() -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(value)
        return stamp

    fast, expected = _outcome(lambda: timestamp(value)), _outcome(slow)
    assert fast == expected, value
    return fast


def test_timestamps_are_those_from_datetime_gives_for_random_instants() -> None:
    rng = random.Random(20240611)
    low, high = datetime(1, 1, 1).toordinal(), datetime(9999, 12, 31).toordinal()
    for _ in range(20_000):
        day = datetime.fromordinal(rng.randint(low, high))
        naive = day.replace(
            hour=rng.randrange(24),
            minute=rng.randrange(60),
            second=rng.randrange(60),
            microsecond=rng.choice([0, 1, 999_999, rng.randrange(1_000_000)]),
        )
        _stamp(naive.replace(tzinfo=rng.choice(ZONES)))


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(
    "value",
    [
        datetime(1970, 1, 1),
        datetime(1970, 1, 1, 0, 0, 0, 1),
        datetime(1969, 12, 31, 23, 59, 59, 999_999),
        datetime(1960, 2, 29, 12, 30, 15, 500_000),
        datetime(2000, 2, 29),
        datetime(2038, 1, 19, 3, 14, 8),
        datetime(2024, 6, 11, 10, 20, 30, 123_456),
        datetime.min,
        datetime.max,
        datetime(1, 1, 1, 23, 59, 59),
        datetime(9999, 12, 31, 0, 0, 1),
    ],
)
def test_timestamps_at_the_edges_are_those_from_datetime_gives(
    value: datetime, zone: timezone | None
) -> None:
    _stamp(value.replace(tzinfo=zone))


def test_timestamps_of_now_and_of_non_datetimes() -> None:
    assert timestamp(None) is None
    _stamp(datetime.now(UTC))
    _stamp(datetime.now())
    _stamp(datetime.now(timezone(timedelta(hours=-3))))
    _stamp("2024-06-11T10:20:30Z")
    _stamp(1718100000)


@pytest.mark.parametrize("context", SHORT_CONTEXTS)
def test_stored_short_contexts_do_not_need_json_format(
    context: conversation_pb2.ShortContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.context.rows as rows

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json_format was called")

    text = json.dumps(json_format.MessageToDict(context))
    monkeypatch.setattr(rows.json_format, "Parse", refused)
    monkeypatch.setattr(rows.json_format, "MessageToDict", refused)
    assert short_context_into(text, conversation_pb2.ShortContext()) == context
    assert json.loads(text) == short_context_dict(context)
