"""The shared words: car states with their two-letter codes, and the one "is a dispatcher online" rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from protocol import (
    CAR_STATE_BY_CODE,
    CAR_STATE_CODES,
    CarState,
    ComputeState,
    ConnectionStatus,
    Liveness,
    dispatcher_online,
    is_online_dispatcher,
)

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def status(sender: str, state: Liveness, role: str = "dispatcher") -> ConnectionStatus:
    return ConnectionStatus(sender=sender, sent_at=NOW, sim_time=NOW, role=role, state=state)  # type: ignore[arg-type]


def test_every_state_has_one_distinct_two_letter_code() -> None:
    assert set(CAR_STATE_CODES) == set(CarState)
    codes = [state.code for state in CarState]
    assert len(set(codes)) == len(codes) and all(len(code) == 2 and code.istitle() for code in codes)
    assert all(CAR_STATE_BY_CODE[state.code] is state for state in CarState)
    assert [state.code for state in CarState] == ["Id", "Bu", "Va", "Su", "Dr", "On", "As", "Of"]


@pytest.mark.parametrize("word", [*Liveness, *ComputeState])
def test_a_liveness_or_compute_state_names_the_car_state_of_the_same_value(word: Liveness | ComputeState) -> None:
    assert CarState(word).value == word.value


def test_a_dispatcher_is_online_while_its_latest_status_says_so() -> None:
    assert not dispatcher_online([])
    assert not dispatcher_online([status("gw-1-0-1", Liveness.ONLINE, role="gateway")])
    assert not dispatcher_online([status("tui-1", Liveness.ONLINE, role="operator")])
    assert dispatcher_online([status("dispatcher", Liveness.ONLINE), status("dispatcher-b", Liveness.OFFLINE)])
    assert not dispatcher_online([status("dispatcher", Liveness.OFFLINE)])  # its Last Will
    assert is_online_dispatcher(status("dispatcher", Liveness.ONLINE))
    assert not is_online_dispatcher(status("dispatcher", Liveness.ASLEEP))
