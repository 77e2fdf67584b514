"""Folding old turns into the session summary, so a long conversation stays bounded.

The last N turns stay verbatim in the context; older ones are folded, in batches, into the
summary as short "role: text" lines, and the summary keeps only its newest lines within a size
limit. This is the offline, deterministic fold; a model-written summary can replace `fold_lines`
without changing the storage.
"""

from collections.abc import Sequence

from metaagent.common.v1 import conversation_pb2

ROLE_NAMES = {
    conversation_pb2.TURN_ROLE_USER: "user",
    conversation_pb2.TURN_ROLE_AGENT: "agent",
    conversation_pb2.TURN_ROLE_HUMAN: "human",
}
LINE_CHARS = 160
SUMMARY_CHARS = 2_000


def fold_lines(summary: str, turns: Sequence[conversation_pb2.ConversationTurn]) -> str:
    """`summary` followed by one line per turn, trimmed to its newest SUMMARY_CHARS."""
    lines = [line for line in summary.splitlines() if line]
    for turn in turns:
        text = " ".join(turn.text.split())
        if len(text) > LINE_CHARS:
            text = text[: LINE_CHARS - 1] + "…"
        lines.append(f"{ROLE_NAMES.get(turn.role, 'turn')}: {text}")
    while lines and len("\n".join(lines)) > SUMMARY_CHARS:
        lines.pop(0)
    return "\n".join(lines)
