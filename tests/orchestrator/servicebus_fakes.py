"""Our seams in place of the Service Bus SDK's receiver (test_servicebus.py, test_handoff_feed.py):
the SDK's own message types go through them, no namespace is needed."""

import asyncio
from typing import Any

from azure.servicebus import ServiceBusMessage


class FakeReceiver:
    """A receiver that hands out `batches`, then nothing (after a short wait), and records the
    settlements of real messages as (kind, message id, options)."""

    def __init__(self, batches: list[list[ServiceBusMessage]] | None = None) -> None:
        self.batches = batches if batches is not None else []
        self.settled: list[tuple[str, str, dict[str, Any]]] = []

    async def __aenter__(self) -> "FakeReceiver":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def receive_messages(
        self, max_message_count: int, max_wait_time: float
    ) -> list[ServiceBusMessage]:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.01)
        return []

    async def complete_message(self, message: ServiceBusMessage) -> None:
        self.settled.append(("complete", str(message.message_id), {}))

    async def abandon_message(self, message: ServiceBusMessage) -> None:
        self.settled.append(("abandon", str(message.message_id), {}))

    async def dead_letter_message(self, message: ServiceBusMessage, **options: Any) -> None:
        self.settled.append(("dead-letter", str(message.message_id), options))
