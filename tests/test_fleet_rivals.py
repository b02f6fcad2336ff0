"""The name guard: a fleet process tells a live rival running its cars from a stale status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from fake_vehicles.ids import gateway_id, owned_indices, parse_gateway_id, shares_cars
from fake_vehicles.rivals import NameGuard, Verdict, new_instance
from protocol.vehicle_messages import ConnectionStatus, Liveness

T0 = datetime(2026, 11, 30, 10, tzinfo=UTC)
OURS, OLDER, NEWER = "019000000000.aaaaaaaa", "018000000000.bbbbbbbb", "01a000000000.cccccccc"


def status(name: str, instance: str, at_s: float, state: Liveness = Liveness.ONLINE) -> ConnectionStatus:
    at = T0 + timedelta(seconds=at_s)
    return ConnectionStatus(sender=name, sent_at=at, sim_time=at, role="gateway", state=state, instance=instance)


def test_gateway_names_parse_and_shards_that_meet_share_cars() -> None:
    assert parse_gateway_id("gw-7-1-4") == (7, 1, 4)
    assert parse_gateway_id("gw--3-0-1") == (-3, 0, 1)
    assert parse_gateway_id("gw-7-4-4") is None and parse_gateway_id("car-0011223344") is None
    assert shares_cars("gw-1-0-1", "gw-1-0-1") and shares_cars("gw-1-0-1", "gw-1-1-2")
    assert not shares_cars("gw-1-0-2", "gw-1-1-2") and not shares_cars("gw-1-0-1", "gw-2-0-1")
    assert shares_cars("gw-1-1-4", "gw-1-3-6") and not shares_cars("gw-1-1-4", "gw-1-2-6")


@given(st.integers(0, 5), st.integers(1, 6), st.integers(0, 5), st.integers(1, 6))
def test_shares_cars_is_exactly_whether_the_shards_have_a_car_in_common(i: int, n: int, j: int, m: int) -> None:
    i, j = i % n, j % m
    common = set(owned_indices(0, 72, i, n)) & set(owned_indices(0, 72, j, m))
    assert shares_cars(gateway_id(1, i, n), gateway_id(1, j, m)) == bool(common)


def test_nobody_holds_the_name_so_it_is_claimed_at_once() -> None:
    guard = NameGuard("gw-1-0-1", OURS, confirm_s=10)
    assert guard.seen(status("gw-1-0-1", OURS, 0), 1, retained=True) is Verdict.NOTHING  # our own status
    assert guard.seen(status("gw-1-0-1", OLDER, 0, Liveness.OFFLINE), 1, retained=True) is Verdict.NOTHING  # a Will
    assert guard.seen(status("gw-2-0-1", OLDER, 0), 1, retained=True) is Verdict.NOTHING  # another seed
    assert guard.begin_check(1, now=0.0) and guard.may_speak(1) and not guard.may_speak(2)


def test_a_live_rival_proves_itself_by_speaking() -> None:
    guard = NameGuard("gw-1-0-1", OURS, confirm_s=10)
    guard.seen(status("gw-1-0-1", OLDER, 0), 1, retained=True)  # what the broker kept
    assert not guard.begin_check(1, now=0.0) and guard.waiting_for == ["gw-1-0-1"]
    assert guard.seen(status("gw-1-0-1", OLDER, 0), 1, retained=True) is Verdict.NOTHING  # kept, sent again
    assert not guard.poll(5.0)
    assert guard.seen(status("gw-1-0-1", OLDER, 5), 1, retained=False) is Verdict.CONFLICT  # its heartbeat
    assert guard.conflict == ("another fleet process is running as gw-1-0-1: start this one with another "
                              "--seed or --shard")
    assert not guard.poll(100.0) and not guard.may_speak(1)


def test_a_stale_status_or_one_that_goes_offline_is_not_a_rival() -> None:
    guard = NameGuard("gw-1-0-1", OURS, confirm_s=10)
    guard.seen(status("gw-1-0-1", OLDER, 0), 1, retained=True)
    assert not guard.begin_check(1, now=0.0)
    assert not guard.poll(9.9) and guard.poll(10.0) and guard.conflict is None  # silent: stale
    guard.seen(status("gw-1-0-1", OLDER, 0), 2, retained=True)
    assert not guard.begin_check(2, now=20.0)
    guard.seen(status("gw-1-0-1", OLDER, 1, Liveness.OFFLINE), 2, retained=False)  # its Last Will, a moment late
    assert guard.poll(20.1) and guard.conflict is None


def test_a_kept_status_that_arrives_after_the_claim_is_only_a_suspect() -> None:
    guard = NameGuard("gw-1-0-1", NEWER, confirm_s=10)
    assert guard.begin_check(1, now=0.0)
    assert guard.seen(status("gw-1-0-1", OLDER, 0), 1, retained=True) is Verdict.NOTHING  # late, maybe stale
    assert guard.may_speak(1)
    assert guard.seen(status("gw-1-0-1", OLDER, 5), 1, retained=False) is Verdict.CONFLICT  # alive, and older


def test_a_rival_of_an_overlapping_shard_is_named_as_such() -> None:
    guard = NameGuard("gw-1-0-2", NEWER, confirm_s=10)
    assert guard.begin_check(1, now=0.0)
    assert guard.seen(status("gw-1-0-1", OLDER, 3), 1, retained=False) is Verdict.CONFLICT
    assert guard.conflict is not None and "gw-1-0-1, which runs some of the same cars" in guard.conflict


def test_two_claimants_at_once_the_later_started_gives_way() -> None:
    older, newer = NameGuard("gw-1-0-1", OLDER, 10), NameGuard("gw-1-0-1", NEWER, 10)
    assert older.begin_check(1, 0.0) and newer.begin_check(1, 0.0)  # neither saw the other: a race
    assert older.seen(status("gw-1-0-1", NEWER, 1), 1, retained=False) is Verdict.REASSERT
    assert newer.seen(status("gw-1-0-1", OLDER, 1), 1, retained=False) is Verdict.CONFLICT
    assert older.may_speak(1) and older.conflict is None


def test_statuses_of_an_earlier_connection_do_not_count_in_the_next_check() -> None:
    guard = NameGuard("gw-1-0-1", NEWER, confirm_s=10)
    assert guard.begin_check(1, 0.0)
    assert guard.seen(status("gw-1-0-1", OLDER, 0), 2, retained=True) is Verdict.NOTHING  # on reconnecting
    assert not guard.begin_check(2, 5.0)  # its check waits for the rival, whatever it did before
    guard2 = NameGuard("gw-1-0-1", NEWER, confirm_s=10)
    guard2.seen(status("gw-1-0-1", OLDER, 0), 1, retained=True)
    assert guard2.begin_check(2, 5.0)  # seen on the lost connection only: nothing to wait for


def test_instances_sort_by_start_time() -> None:
    first = new_instance()
    assert len(first) == 21 and first < "ffffffffffff"
    assert all(new_instance() >= first[:12] for _ in range(10))
