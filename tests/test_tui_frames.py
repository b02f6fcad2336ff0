"""The control room's store reads gateway frames: rosters diffed per block, offer frames per car."""

from __future__ import annotations

import pytest

from protocol import Liveness, OfferWithdrawal, Topics, encode
from protocol.frames import ROSTER_BLOCK
from tests.support import control_room as cr
from tests.support.samples import env
from tui.gateways import LEFT_ROSTER
from tui.store import FleetStore


@pytest.fixture
def store(topics: Topics) -> FleetStore:
    return FleetStore(topics)


def roster(store: FleetStore, gateway: str, block: int, cars: list[str | tuple[str, Liveness, str]]) -> None:
    store.ingest(store.topics.roster(gateway, block), encode(cr.roster(gateway, block, cars)))


def offers(store: FleetStore, gateway: str, seq: int, items: list[object]) -> None:
    store.ingest(store.topics.offer_frames(gateway), encode(cr.offer_frame(gateway, seq, items)))  # type: ignore[arg-type]


def codes(store: FleetStore) -> dict[str, str]:
    return {vid: row.code for vid, row in store.cars.items()}


def test_a_roster_is_the_blocks_whole_status_diffed_against_the_previous_one(store: FleetStore) -> None:
    roster(store, "gw-0", 0, ["car-a", "car-b", "car-c"])
    roster(store, "gw-0", 1, ["car-d"])
    assert codes(store) == {"car-a": "On", "car-b": "On", "car-c": "On", "car-d": "On"}
    assert store.cars["car-a"].gateway == "gw-0" and store.cars["car-a"].hardware == "HW5"
    assert store.state_counts["On"] == 4 and store.hardware_counts["HW5"] == 4

    roster(store, "gw-0", 0, ["car-a", ("car-b", Liveness.OFFLINE, "owner drove away")])  # car-c is gone
    assert codes(store) == {"car-a": "On", "car-b": "Of", "car-c": "Of", "car-d": "On"}
    assert store.cars["car-b"].reason == "owner drove away"
    assert store.cars["car-c"].reason == LEFT_ROSTER
    assert store.state_counts["Of"] == 2 and store.state_counts["On"] == 2
    roster(store, "gw-0", 0, ["car-a", "car-c"])  # back in the block: online again
    assert store.cars["car-c"].code == "On" and store.messages == 4 and not store.rejected


def test_another_gateway_may_not_speak_for_a_car_while_its_gateway_is_online(store: FleetStore) -> None:
    topics = store.topics
    store.ingest(topics.connection_status("gw-0"), encode(cr.gateway_status("gw-0")))
    roster(store, "gw-0", 0, ["car-a", "car-b"])
    roster(store, "gw-evil", 0, [("car-a", Liveness.OFFLINE, "hijacked"), "car-x"])
    assert store.cars["car-a"].code == "On" and store.cars["car-a"].gateway == "gw-0"
    assert store.cars["car-x"].gateway == "gw-evil"  # a car nobody listed before is the sender's
    assert store.rejected["car_of_another_gateway"] == 1
    offers(store, "gw-evil", 0, [cr.offer("car-b"), cr.offer("car-y")])  # car-b is gw-0's, car-y nobody's
    assert store.cars["car-b"].offered_tops == 0.0 and "car-y" not in store.cars
    assert store.rejected["car_of_another_gateway"] == 2 and store.rejected["offer_for_unlisted_car"] == 1

    store.ingest(topics.connection_status("gw-0"), encode(cr.gateway_status("gw-0", Liveness.OFFLINE)))
    assert codes(store)["car-a"] == codes(store)["car-b"] == "Of"  # its cars went with it
    assert store.cars["car-a"].reason == "gateway gw-0 offline"
    roster(store, "gw-1", 0, ["car-a"])  # its gateway is gone: another may take the car
    assert store.cars["car-a"].code == "On" and store.cars["car-a"].gateway == "gw-1"
    roster(store, "gw-0", 0, ["car-b"])  # a dead gateway's retained roster: its cars are not online
    assert store.cars["car-b"].code == "Of" and store.cars["car-b"].reason == "gateway gw-0 offline"
    store.ingest(topics.connection_status("gw-0"), encode(cr.gateway_status("gw-0")))  # back, a new run
    roster(store, "gw-0", 0, ["car-b"])  # its new roster no longer speaks for car-a, gw-1's now
    assert store.cars["car-a"].code == "On" and store.cars["car-a"].gateway == "gw-1"
    assert store.cars["car-b"].code == "On"


def test_an_offer_frame_applies_each_cars_offer_and_withdrawal_in_order(store: FleetStore) -> None:
    roster(store, "gw-0", 0, ["car-a", "car-b"])
    offers(store, "gw-0", 0, [cr.offer("car-a", 4_000.0), cr.offer("car-b", 3_000.0)])
    assert (store.cars["car-a"].offered_tops, store.cars["car-b"].offered_tops) == (4_000.0, 3_000.0)
    withdrawal = OfferWithdrawal(**env("car-a"), offer_id="off-car-a", reason="owner returns")
    offers(store, "gw-0", 1, [withdrawal, cr.offer("car-b", 2_000.0)])
    assert (store.cars["car-a"].offered_tops, store.cars["car-b"].offered_tops) == (0.0, 2_000.0)
    roster(store, "gw-0", 0, ["car-b"])  # car-a left the block: an offer for it is no longer the gateway's
    offers(store, "gw-0", 2, [cr.offer("car-a")])
    assert store.cars["car-a"].offered_tops == 0.0 and store.rejected["offer_for_unlisted_car"] == 1


def test_a_malformed_frame_is_counted_and_dropped(store: FleetStore) -> None:
    good = encode(cr.roster("gw-0", 0, ["car-a"]))
    store.ingest(store.topics.roster("gw-1", 0), good)  # gw-0's roster on gw-1's topic
    store.ingest(store.topics.roster("gw-0", 3), good)  # block 0 on block 3's topic
    store.ingest(store.topics.roster("gw-0", 0), good[:-5])
    assert not store.cars and store.rejected_total == 3 and store.messages == 3


def test_a_fleet_learned_from_its_retained_rosters(topics: Topics) -> None:
    """As a late control room learns a fleet: every block's retained roster, once."""
    store = FleetStore(topics)
    for topic, payload in cr.roster_feed(topics, 100_000):
        store.ingest(topic, payload)
    assert len(store.cars) == 100_000 and store.messages == 100_000 // ROSTER_BLOCK
    assert store.state_counts["On"] == 100_000 and not store.rejected
