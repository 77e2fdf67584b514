"""A long-running coroutine as a background task of a server (the outbox relay, a Service Bus
subscription feed):

    task = BackgroundTask(relay.run, name="outbox-relay", label="outbox relay")
    MeshServer(..., readiness=[..., task.start], cleanup=[task.stop, ...])

`run(stop)` runs until `stop` is set. `start` is idempotent (a readiness check, after the
dependency checks, may be retried); `stop` (a cleanup, before the clients close) sets the event
and lets the work in hand finish for up to `grace` seconds, then cancels it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

__all__ = ["BackgroundTask"]

log = logging.getLogger(__name__)


class BackgroundTask:
    """`run(stop)` as a task; see the module docstring."""

    def __init__(
        self,
        run: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
        *,
        name: str,
        label: str,
        grace: float,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """`name`: the task's; `label`: how the logs call it; `extra`: what the start logs."""
        self._run = run
        self._name = name
        self._label = label
        self._grace = grace
        self._extra = dict(extra or {})
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        if self._task is not None:
            return
        self._task = asyncio.create_task(
            self._run(self._stop), name=self._name, context=contextvars.Context()
        )
        log.info("%s started", self._label, extra=self._extra)

    async def stop(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, self._grace)
        except TimeoutError:
            log.warning("%s did not stop in time; cancelled", self._label)
        except Exception:
            log.exception("%s ended with an error", self._label)
