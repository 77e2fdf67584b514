"""Circuit breakers driven by an injected clock."""

import pytest

from services.llm.breaker import BreakerBoard, CircuitBreaker, State


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Changes = list[tuple[str, State, State]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> Changes:
    return []


@pytest.fixture
def breaker(clock: FakeClock, changes: Changes) -> CircuitBreaker:
    return CircuitBreaker(
        "eastus-gpt5",
        failure_threshold=3,
        reset_timeout=30.0,
        clock=clock,
        on_state_change=lambda *change: changes.append(change),
    )


def state_of(breaker: CircuitBreaker) -> State:
    """The state, read through a call so that type checkers do not narrow the property."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_opens_after_consecutive_failures(breaker: CircuitBreaker, changes: Changes) -> None:
    fail(breaker, 2)
    assert state_of(breaker) == "closed"
    fail(breaker, 1)
    assert state_of(breaker) == "open"
    assert changes == [("eastus-gpt5", "closed", "open")]


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record_success()
    fail(breaker, 2)
    assert state_of(breaker) == "closed"


def test_refuses_while_open_then_half_opens_after_the_timeout(
    breaker: CircuitBreaker, clock: FakeClock, changes: Changes
) -> None:
    fail(breaker, 3)
    clock.now += 29.9
    assert not breaker.allow()
    assert breaker.retry_after == pytest.approx(0.1)
    clock.now += 0.1
    assert state_of(breaker) == "half_open"
    assert breaker.retry_after == 0.0
    assert changes[-1] == ("eastus-gpt5", "open", "half_open")


def test_half_open_admits_only_the_allowed_trials(clock: FakeClock) -> None:
    breaker = CircuitBreaker("d", 1, 10.0, half_open_max_calls=2, clock=clock)
    fail(breaker, 1)
    clock.now += 10
    assert [breaker.allow() for _ in range(4)] == [True, True, False, False]


def test_a_successful_trial_closes_it(
    breaker: CircuitBreaker, clock: FakeClock, changes: Changes
) -> None:
    fail(breaker, 3)
    clock.now += 30
    assert breaker.allow()
    assert not breaker.allow()
    breaker.record_success()
    assert state_of(breaker) == "closed"
    assert all(breaker.allow() for _ in range(5))
    assert [new for _, _, new in changes] == ["open", "half_open", "closed"]


def test_a_failed_trial_reopens_it_and_restarts_the_timer(
    breaker: CircuitBreaker, clock: FakeClock, changes: Changes
) -> None:
    fail(breaker, 3)
    clock.now += 30
    assert breaker.allow()
    breaker.record_failure()
    assert state_of(breaker) == "open"
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()
    assert [(old, new) for _, old, new in changes] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
    ]


def test_trials_that_never_report_are_written_off(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 30
    assert breaker.allow()
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


def test_late_outcomes_of_calls_started_before_opening_are_ignored(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    breaker.record_success()
    assert state_of(breaker) == "open"
    clock.now += 30
    breaker.record_failure()
    breaker.record_success()
    assert state_of(breaker) == "half_open"


def test_a_failing_listener_does_not_break_the_breaker(clock: FakeClock) -> None:
    def explode(name: str, old: State, new: State) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker("d", 1, 5.0, clock=clock, on_state_change=explode)
    fail(breaker, 1)
    assert state_of(breaker) == "open"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker("d", failure_threshold=0)
    with pytest.raises(ValueError, match="positive"):
        CircuitBreaker("d", reset_timeout=0)
    with pytest.raises(ValueError, match="at least 1"):
        BreakerBoard(half_open_max_calls=0)


def test_the_board_keeps_one_breaker_per_deployment(clock: FakeClock) -> None:
    changes: Changes = []
    board = BreakerBoard(
        failure_threshold=2,
        reset_timeout=5.0,
        clock=clock,
        on_state_change=lambda *change: changes.append(change),
    )
    assert board.get("eastus") is board["eastus"]
    fail(board["eastus"], 2)
    assert board.states() == {"eastus": "open"}
    assert board["westeurope"].allow()
    assert board.states() == {"eastus": "open", "westeurope": "closed"}
    assert changes == [("eastus", "closed", "open")]
    clock.now += 5
    assert board.states()["eastus"] == "half_open"
