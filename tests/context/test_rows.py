"""The fast row conversions agree with json_format, and fall back to it for anything else."""

from typing import Any

import pytest
from google.protobuf import json_format
from metaagent.common.v1 import conversation_pb2

from services.context.rows import action_dict, action_into, message_dict, message_into

ACTIONS = [
    conversation_pb2.Action(),
    conversation_pb2.Action(action_id="a1", type="create_order"),
    conversation_pb2.Action(
        action_id="a2",
        type="payment_link",
        status=conversation_pb2.ACTION_STATUS_SENT,
    ),
]
ACTIONS[2].params.update({"amount": "189.99", "items": [{"sku": "k", "qty": 2}], "ok": True})
METADATA = [
    conversation_pb2.TurnMetadata(),
    conversation_pb2.TurnMetadata(
        channel=conversation_pb2.CHANNEL_WHATSAPP,
        tokens_used=17,
        confidence=0.8421,
        intent="checkout_flow",
        degraded=True,
        human_agent_id="agent-1",
    ),
]


@pytest.mark.parametrize("action", ACTIONS)
def test_actions_convert_exactly_as_json_format_does(action: conversation_pb2.Action) -> None:
    assert action_dict(action) == json_format.MessageToDict(action)
    assert action_into(action_dict(action), conversation_pb2.Action()) == action


@pytest.mark.parametrize("metadata", METADATA)
def test_metadata_converts_exactly_as_json_format_does(
    metadata: conversation_pb2.TurnMetadata,
) -> None:
    assert message_dict(metadata) == json_format.MessageToDict(metadata)
    assert message_into(message_dict(metadata), conversation_pb2.TurnMetadata()) == metadata


@pytest.mark.parametrize(
    "stored",
    [
        {"channel": 2, "tokensUsed": "17"},  # enum as a number, int as a string
        {"tokens_used": 3},  # the field's own name, which ParseDict accepts
    ],
)
def test_other_spellings_json_format_accepts_are_read_the_same(stored: dict[str, Any]) -> None:
    expected = json_format.ParseDict(stored, conversation_pb2.TurnMetadata())
    assert message_into(stored, conversation_pb2.TurnMetadata()) == expected


def test_unknown_or_malformed_values_fail_as_json_format_does() -> None:
    with pytest.raises(json_format.ParseError):
        message_into({"noSuchField": 1}, conversation_pb2.TurnMetadata())
    with pytest.raises(json_format.ParseError):
        action_into({"status": "NOT_A_STATUS"}, conversation_pb2.Action())
    with pytest.raises(json_format.ParseError):
        action_into({"extra": 1}, conversation_pb2.Action())
