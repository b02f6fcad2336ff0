"""A gateway fleet speaks in frames: rosters of blocks and offer frames, from the core to a client we did not write."""

from __future__ import annotations

import asyncio
import hashlib
import random
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from fake_vehicles.car import Car
from fake_vehicles.fleet import Fleet, FleetConfig
from fake_vehicles.frames import GatewayFrames
from fake_vehicles.messages import Encoder
from protocol.base import FRAME_MAX_BYTES
from protocol.codec import decode
from protocol.frames import OFFER_FRAME_MAX, ROSTER_BLOCK, CarRoster, OfferFrame, decode_frame
from protocol.topics import Channel, Topics
from protocol.vehicle_messages import ComputeOffer, Liveness, OfferWithdrawal
from tests.support.brokers import TestBroker
from tests.support.demo_loadtest import child
from tests.support.mosquitto_clients import mosquitto_sub
from tests.support.waiting import wait_until
from tests.test_vehicle_broker import fleet_command

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()
WALL = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
GW = "gw-3-0-1"


def gateway_fleet(count: int, seed: int = 3, place: bool = True, gateway: str | None = GW) -> Fleet:
    fleet = Fleet(FleetConfig(seed=seed, count=count, gateway=gateway, faulty_share=0.1),
                  Encoder(Topics("frames"), 0.0, gateway), random.Random(seed))
    fleet.encoder.stamp(WALL, T0)
    fleet.join(T0, count, place=place)
    return fleet


def frames_of(fleet: Fleet) -> GatewayFrames:
    assert fleet.frames is not None
    return fleet.frames


def run(fleet: Fleet, until: float, step: float = 60.0, place_max: int | None = None) -> None:
    now = fleet.t or T0
    while now < until:
        now = min(until, now + step)
        fleet.encoder.stamp(WALL, now)
        fleet.advance(now, place_max)
        fleet.sweep(now, 100_000)


def test_fast_rosters_and_offer_frames_decode_to_exactly_what_the_slow_path_builds() -> None:
    fleet = gateway_fleet(2 * ROSTER_BLOCK + 37)
    frames = frames_of(fleet)
    odd = fleet.cars[ROSTER_BLOCK + 3]
    fleet.send_status(odd, Liveness.OFFLINE, 'a "quoted" reason \\ with ünïcode', faults=False)
    rosters = frames.rosters(fleet.cars)
    assert [topic for topic, _ in rosters] == [f"frames/v1/gateways/{GW}/roster/{b}" for b in range(3)]
    for block, (_, payload) in enumerate(rosters):
        assert decode_frame(Channel.ROSTER, payload) == frames.roster_model(block, fleet.cars)
    listed = [decode_frame(Channel.ROSTER, p) for _, p in rosters]
    assert sum(len(r.cars) for r in listed if isinstance(r, CarRoster)) == len(fleet.cars)
    run(fleet, T0 + 1800)
    items = list(frames.offers)
    assert Counter(decode(i).kind for i in items).keys() == {"offer", "offer_withdrawn"}
    sent = frames.offer_frames(final=True)
    start = 0
    for seq, (topic, payload) in enumerate(sent, start=1):
        assert topic == f"frames/v1/gateways/{GW}/offers" and len(payload) <= FRAME_MAX_BYTES
        frame = decode_frame(Channel.OFFER_FRAME, payload)
        assert isinstance(frame, OfferFrame) and len(frame.offers) <= OFFER_FRAME_MAX
        originals = [decode(i) for i in items[start:start + len(frame.offers)]]
        assert all(isinstance(o, ComputeOffer | OfferWithdrawal) for o in originals)
        assert frame == frames.offer_frame_model(seq, originals)  # type: ignore[arg-type]
        start += len(frame.offers)
    assert start == len(items) > OFFER_FRAME_MAX and not frames.offers  # more than one frame, nothing left


def test_only_the_blocks_whose_cars_changed_are_published_again() -> None:
    fleet = gateway_fleet(3 * ROSTER_BLOCK)
    frames = frames_of(fleet)
    assert len(frames.rosters(fleet.cars)) == 3 and not fleet.outbox  # no per-car status in gateway mode
    car = fleet.cars[ROSTER_BLOCK + 10]
    fleet.go_silent(car)
    ((topic, payload),) = frames.rosters(fleet.cars)
    assert topic.endswith("/roster/1")
    roster = decode_frame(Channel.ROSTER, payload)
    assert isinstance(roster, CarRoster)
    (entry,) = [e for e in roster.cars if e.vehicle_id == car.vehicle_id]
    assert (entry.state, entry.reason) == (Liveness.OFFLINE, "connection lost")  # as a car's Will would say
    fleet.restart(car)
    ((_, payload),) = frames.rosters(fleet.cars)
    roster = decode_frame(Channel.ROSTER, payload)
    assert isinstance(roster, CarRoster)
    assert {(e.state, e.reason) for e in roster.cars if e.vehicle_id == car.vehicle_id} == {(Liveness.ONLINE,
                                                                                              "restarted")}


def test_goodbye_lists_every_car_offline_and_reannouncing_republishes_rosters_and_current_offers() -> None:
    fleet = gateway_fleet(ROSTER_BLOCK + 20)
    frames = frames_of(fleet)
    run(fleet, T0 + 900)
    frames.rosters(fleet.cars)
    frames.offer_frames(final=True)
    offering = {car.vehicle_id: car.offer_id for car in fleet.cars if car.offer_id is not None}
    fleet.reannounce_all()
    while fleet.reannounce_some(ROSTER_BLOCK):
        pass
    assert len(frames.rosters(fleet.cars)) == 2
    again = [decode(item) for item in frames.offers]
    assert {(o.sender, o.offer_id) for o in again if isinstance(o, ComputeOffer)} == set(offering.items())
    frames.offer_frames(final=True)
    fleet.say_goodbye(range(len(fleet.cars)))
    withdrawn = {decode(item).sender for item in frames.offers}
    assert withdrawn == set(offering)
    rosters = [decode_frame(Channel.ROSTER, p) for _, p in frames.rosters(fleet.cars)]
    entries = [e for r in rosters if isinstance(r, CarRoster) for e in r.cars]
    assert len(entries) == len(fleet.cars)
    assert {(e.state, e.reason) for e in entries} == {(Liveness.OFFLINE, "fleet process stopped")}


def fingerprint(fleet: Fleet) -> str:
    state = [[getattr(c, s) for s in Car.__slots__ if s != "shard"] for c in fleet.cars]
    return hashlib.sha256(repr(state).encode()).hexdigest()


def test_cars_joined_unplaced_live_exactly_the_lives_of_cars_placed_on_joining() -> None:
    eager, lazy = gateway_fleet(1500, place=True), gateway_fleet(1000, place=False)
    lazy.add_cars(500, None)
    lazy.join(T0, 500, place=False)
    assert len(lazy.unplaced) == 1500 and fingerprint(eager) != fingerprint(lazy)
    sent: dict[str, Counter[tuple[str, bytes]]] = {}
    for name, fleet in (("eager", eager), ("lazy", lazy)):
        run(fleet, T0 + 3600, step=300, place_max=100)  # placed a hundred a step, or when the sweep needs them
        run(fleet, T0 + 86_400, step=600)
        fleet.outbox.extend((-1, Channel.OFFER, "offers", item) for item in frames_of(fleet).offers)
        sent[name] = Counter((topic, payload) for _, _, topic, payload in fleet.outbox)
    assert not lazy.unplaced and fingerprint(eager) == fingerprint(lazy)
    assert sent["eager"] == sent["lazy"] and len(sent["eager"]) > 10_000  # the same messages, a day of them


def test_per_car_mode_keeps_one_status_per_car_and_no_frames() -> None:
    fleet = gateway_fleet(10, gateway=None)
    assert fleet.frames is None
    assert [channel for _, channel, _, _ in fleet.outbox] == [Channel.VEHICLE_STATUS] * 10


def rosters_seen(lines: list[str], root: str) -> dict[int, CarRoster]:
    """The latest roster of each block among `%r %t %p` lines of mosquitto_sub."""
    latest: dict[int, CarRoster] = {}
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1].startswith(f"{root}/gateways/") and "/roster/" in parts[1]:
            roster = decode_frame(Channel.ROSTER, parts[2].encode())
            assert isinstance(roster, CarRoster)
            latest[roster.block] = roster
    return latest


def offer_frames_seen(lines: list[str], root: str) -> list[OfferFrame]:
    frames = []
    for line in lines:
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1].endswith("/offers") and parts[1].startswith(f"{root}/gateways/"):
            frame = decode_frame(Channel.OFFER_FRAME, parts[2].encode())
            assert isinstance(frame, OfferFrame)
            frames.append(frame)
    return frames


async def test_a_gateways_rosters_and_offer_frames_reach_mosquitto_sub_and_a_departure_shows_in_its_roster(
    any_broker: TestBroker, tmp_path: Path
) -> None:
    b, root = any_broker, any_broker.topics.root
    cars = ROSTER_BLOCK + 100
    # late afternoon at 600x: commuters leave work within seconds, and each goes silent as it drives off
    flags = ("--count", str(cars), "--mode", "gateway", "--speed", "600", "--seed", "3",
             "--inject-faults", "silent=1")
    async with mosquitto_sub(b, "observer", f"{root}/gateways/#", extra=("-F", "%r %t %p")) as sub:
        command = fleet_command(b, *flags)
        command[command.index("--sim-start") + 1] = "2026-11-30T16:30:00Z"
        async with child(command, tmp_path, tmp_path / "fleet.log"):
            await wait_until(lambda: len(rosters_seen(sub.lines, root)) == 2, 30, "both blocks' rosters")
            listed = {e.vehicle_id for r in rosters_seen(sub.lines, root).values() for e in r.cars}
            assert len(listed) == cars
            await wait_until(lambda: len(offer_frames_seen(sub.lines, root)) >= 2, 30, "two offer frames")
            frames = offer_frames_seen(sub.lines, root)
            assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + len(frames)))
            assert {item.sender for f in frames for item in f.offers} <= listed
            assert {f.sender for f in frames} == {"gw-3-0-1"}

            def gone() -> set[str]:
                return {e.vehicle_id for r in rosters_seen(sub.lines, root).values() for e in r.cars
                        if e.state is Liveness.OFFLINE and e.reason == "connection lost"}

            await wait_until(lambda: bool(gone()), 30, "a car that drove off silent, offline in its roster")
            assert gone() <= listed


async def test_goodbye_leaves_every_retained_roster_with_its_cars_offline_for_a_new_subscriber(
    any_broker: TestBroker, tmp_path: Path
) -> None:
    b, root = any_broker, any_broker.topics.root
    cars = ROSTER_BLOCK + 40
    command = fleet_command(b, "--count", str(cars), "--mode", "gateway", "--speed", "120")
    async with mosquitto_sub(b, "observer", f"{root}/gateways/+/roster/+", extra=("-F", "%r %t %p")) as sub, \
            child(command, tmp_path, tmp_path / "fleet.log") as proc:
        await wait_until(lambda: len(rosters_seen(sub.lines, root)) == 2, 30, "both blocks' rosters")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    async with mosquitto_sub(b, "observer", f"{root}/gateways/+/roster/+", extra=("-F", "%r %t %p")) as late:
        await wait_until(lambda: len(rosters_seen(late.lines, root)) == 2, 20, "the retained rosters")
        flags = {line[:2] for line in late.lines if line[:2] in ("0 ", "1 ")}  # %r: the retain flag
        assert flags == {"1 "}  # each roster as the broker kept it
        entries = [e for r in rosters_seen(late.lines, root).values() for e in r.cars]
        assert len({e.vehicle_id for e in entries}) == cars
        assert {(e.state, e.reason) for e in entries} == {(Liveness.OFFLINE, "fleet process stopped")}
