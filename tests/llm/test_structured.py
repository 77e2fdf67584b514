"""The answer contract: parsing, the repair message, and streaming the reply text."""

import json

import pytest

from services.llm.structured import MalformedOutput, ReplyStreamer, parse_answer

GOOD = {
    "reply": 'Claro: la "Kobe 6" cuesta 189,99 €\nsegún el catálogo 👟',
    "intent": "checkout_flow",
    "confidence": 0.82,
    "actions": [{"type": "create_order", "params_json": '{"productId": "kobe", "quantity": 1}'}],
    "entities_json": '{"size": "43"}',
}


def test_a_good_answer_is_parsed_with_decoded_params_and_entities() -> None:
    answer = parse_answer(json.dumps(GOOD))
    assert answer.reply == GOOD["reply"]
    assert (answer.intent, answer.confidence) == ("checkout_flow", 0.82)
    assert answer.actions[0].type == "create_order"
    assert answer.actions[0].params == {"productId": "kobe", "quantity": 1}
    assert answer.entities == {"size": "43"}


def test_fenced_json_and_out_of_range_confidence_are_tolerated() -> None:
    fenced = "```json\n" + json.dumps({**GOOD, "confidence": 7}) + "\n```"
    assert parse_answer(fenced).confidence == 1.0


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("not json", "the answer is not valid JSON"),
        ("[1, 2]", "the answer must be a JSON object"),
        (json.dumps({**GOOD, "reply": "  "}), "reply must be a non-empty string"),
        (json.dumps({**GOOD, "confidence": "high"}), "confidence must be a number"),
        (json.dumps({**GOOD, "actions": {"type": "x"}}), "actions must be a list"),
        (json.dumps({**GOOD, "actions": [{"params_json": "{}"}]}), "actions[0] must be"),
        (
            json.dumps({**GOOD, "actions": [{"type": "x", "params_json": "{oops"}]}),
            "actions[0].params_json is not valid JSON",
        ),
        (json.dumps({**GOOD, "entities_json": "[1]"}), "entities_json must be a JSON object"),
    ],
)
def test_malformed_answers_name_the_problem(answer: str, problem: str) -> None:
    with pytest.raises(MalformedOutput, match=problem.replace("[", r"\[").replace("]", r"\]")):
        parse_answer(answer)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_the_reply_streams_whole_whatever_the_chunking(size: int) -> None:
    text = json.dumps(GOOD)  # escapes the quotes and the newline, keeps é and € raw
    ascii_text = json.dumps(GOOD, ensure_ascii=True)  # \u escapes, a surrogate pair for 👟
    for raw in (text, ascii_text):
        streamer = ReplyStreamer()
        pieces = [streamer.feed(raw[i : i + size]) for i in range(0, len(raw), size)]
        assert "".join(pieces) == GOOD["reply"]
        assert streamer.feed('"reply": "again"') == ""


def test_a_reply_that_is_not_first_still_streams() -> None:
    raw = '{"intent": "x", "reply" :  "hola \\"tú\\"", "confidence": 1}'
    streamer = ReplyStreamer()
    assert "".join(streamer.feed(c) for c in raw) == 'hola "tú"'
