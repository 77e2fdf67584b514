"""Circuit breakers, one per LLM deployment, so failover skips a deployment that keeps failing.

closed --(failure_threshold consecutive failures)--> open --(reset_timeout)--> half_open
half_open --(a trial succeeds)--> closed;  half_open --(a trial fails)--> open (timer restarts)

Failures are counted consecutively: any success in the closed state resets the count. A
deployment failing only part of the time stays closed; per-call failover covers those calls.
The caller decides what a failure is (timeouts, 5xx, connection errors; not a 400 or a content
filter refusal, which say nothing about the deployment's health).

Protocol: `allow()` before a call, then exactly one of `record_success()` / `record_failure()`.
In half-open, `allow()` admits at most `half_open_max_calls` trials; trials that never report
(a cancelled call) are written off after another `reset_timeout`, so the breaker cannot stay
half-open forever. Outcomes that arrive while open, or while half-open before any trial was
admitted, come from calls started before the breaker opened and are ignored.

The breaker never awaits, so each method is atomic under asyncio; it is not meant to be shared
between threads.
"""

import logging
import time
from collections.abc import Callable
from typing import Literal

log = logging.getLogger("metaagent.llm.breaker")

State = Literal["closed", "open", "half_open"]
StateListener = Callable[[str, State, State], None]
"""Called with (breaker name, old state, new state) on every transition."""


class CircuitBreaker:
    """A breaker for one named dependency."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or reset_timeout <= 0:
            raise ValueError("thresholds must be at least 1 and the timeout positive")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.half_open_max_calls = half_open_max_calls
        self.on_state_change = on_state_change
        self._clock = clock
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self._trial_started = 0.0

    @property
    def state(self) -> State:
        """The current state; an open breaker reads "half_open" once its timeout has passed."""
        self._refresh()
        return self._state

    @property
    def retry_after(self) -> float:
        """Seconds until an open breaker admits a trial call; 0 when it is not open."""
        if self.state != "open":
            return 0.0
        return max(self._opened_at + self.reset_timeout - self._clock(), 0.0)

    def allow(self) -> bool:
        """Whether a call may go ahead now; in half-open this takes one of the trial slots."""
        self._refresh()
        if self._state == "closed":
            return True
        if self._state == "open":
            return False
        now = self._clock()
        if self._trials >= self.half_open_max_calls and (
            now - self._trial_started >= self.reset_timeout
        ):
            self._trials = 0
        if self._trials < self.half_open_max_calls:
            self._trials += 1
            self._trial_started = now
            return True
        return False

    def record_success(self) -> None:
        """A call succeeded: reset the failure count, or close a half-open breaker."""
        self._refresh()
        if self._state == "closed":
            self._failures = 0
        elif self._state == "half_open" and self._trials:
            self._transition("closed")

    def record_failure(self) -> None:
        """A call failed: count it, opening the breaker at the threshold or from half-open."""
        self._refresh()
        if self._state == "closed":
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._transition("open")
        elif self._state == "half_open" and self._trials:
            self._transition("open")

    def _refresh(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout:
            self._transition("half_open")

    def _transition(self, new: State) -> None:
        old = self._state
        self._state = new
        self._failures = 0
        self._trials = 0
        if new == "open":
            self._opened_at = self._clock()
        if self.on_state_change is not None:
            try:
                self.on_state_change(self.name, old, new)
            except Exception:
                log.exception("circuit breaker listener failed for %s", self.name)


class BreakerBoard:
    """One breaker per deployment name, created on first use with the board's settings."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_state_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or reset_timeout <= 0:
            raise ValueError("thresholds must be at least 1 and the timeout positive")
        self._settings = (failure_threshold, reset_timeout, half_open_max_calls)
        self._clock = clock
        self._on_state_change = on_state_change
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str) -> CircuitBreaker:
        """The breaker of deployment `name`."""
        breaker = self._breakers.get(name)
        if breaker is None:
            threshold, timeout, trials = self._settings
            breaker = CircuitBreaker(
                name, threshold, timeout, trials, self._clock, self._on_state_change
            )
            self._breakers[name] = breaker
        return breaker

    __getitem__ = get

    def states(self) -> dict[str, State]:
        """Each known deployment's current state."""
        return {name: breaker.state for name, breaker in self._breakers.items()}
