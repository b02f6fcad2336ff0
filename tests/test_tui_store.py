"""The control room's pure core on its own: the fleet store, the node order, the panels' text."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from protocol import (
    ComputeState,
    ConnectionStatus,
    Gear,
    JobStatus,
    Liveness,
    OfferWithdrawal,
    SuspendReason,
    Topics,
    encode,
)
from protocol.clock import ManualClock
from tests.support import control_room as cr
from tui import panels
from tui.details import car_lines, job_lines
from tui.nodeview import NodeOrder, format_cells, state_strip
from tui.store import FleetStore


@pytest.fixture
def store(topics: Topics) -> FleetStore:
    return FleetStore(topics)


def feed(store: FleetStore, topic: str, message: object) -> None:
    store.ingest(topic, encode(message))  # type: ignore[arg-type]


def recount(store: FleetStore) -> Counter[str]:
    return Counter(row.code for row in store.cars.values())


def test_cars_appear_and_change_state(store: FleetStore, topics: Topics) -> None:
    feed(store, topics.vehicle_status("car-a"), cr.status("car-a"))
    assert store.cars["car-a"].code == "On" and store.cars["car-a"].hardware == "HW5"
    feed(store, topics.telemetry("car-a"), cr.telemetry("car-a"))
    assert store.cars["car-a"].code == "Id"
    feed(store, topics.telemetry("car-a"), cr.telemetry("car-a", ComputeState.BUSY, in_use=2500.0, shard="asg-1"))
    row = store.cars["car-a"]
    assert (row.code, row.tops_in_use, row.shard) == ("Bu", 2500.0, "asg-1")
    feed(store, topics.telemetry("car-a"), cr.telemetry("car-a", ComputeState.SUSPENDED,
                                                        reason=SuspendReason.PACK_TOO_HOT))
    assert (row.code, row.reason) == ("Su", "pack_too_hot")
    feed(store, topics.telemetry("car-a"), cr.telemetry("car-a", gear=Gear.DRIVE))
    assert (row.code, row.reason) == ("Dr", "driving")
    feed(store, topics.vehicle_status("car-a"), cr.status("car-a", Liveness.OFFLINE))
    assert row.code == "Of"
    assert store.arrival == ["car-a"]
    assert +store.state_counts == recount(store) == Counter({"Of": 1})


def test_the_control_room_knows_a_dispatcher_online_by_the_shared_rule(store: FleetStore, topics: Topics) -> None:
    def hear(sender: str, state: Liveness, role: str = "dispatcher") -> None:
        feed(store, topics.connection_status(sender), ConnectionStatus(
            sender=sender, sent_at=cr.T0, sim_time=cr.T0, role=role, state=state))  # type: ignore[arg-type]

    hear("gw-1-0-1", Liveness.ONLINE, role="gateway")
    assert not store.dispatcher_online
    hear("dispatcher", Liveness.ONLINE)
    assert store.dispatcher_online
    hear("dispatcher", Liveness.OFFLINE)  # its Last Will
    assert not store.dispatcher_online


def test_state_counts_stay_equal_to_a_recount(store: FleetStore, topics: Topics) -> None:
    states = [ComputeState.IDLE, ComputeState.BUSY, ComputeState.VACATING, ComputeState.SUSPENDED]
    for i in range(200):
        vid = f"car-{i % 37}"
        feed(store, topics.telemetry(vid), cr.telemetry(vid, states[i % 4], hardware=("HW5", "HW6")[i % 2]))
        if i % 11 == 0:
            feed(store, topics.vehicle_status(vid), cr.status(vid, Liveness.ASLEEP))
    assert +store.state_counts == recount(store)
    assert sum(store.hardware_counts.values()) == len(store.cars) == 37
    assert +store.hardware_counts == Counter(row.hardware for row in store.cars.values())


def test_bad_messages_are_counted_never_raised(store: FleetStore, topics: Topics) -> None:
    feed(store, topics.telemetry("car-a"), cr.telemetry("car-a"))
    store.ingest(topics.telemetry("car-a"), b"{not json")
    store.ingest("elsewhere/v1/vehicles/car-a/telemetry", encode(cr.telemetry("car-a")))
    store.ingest(topics.telemetry("car-b"), encode(cr.telemetry("car-a")))  # another car's name
    store.ingest(topics.summary, encode(cr.telemetry("car-a")))  # wrong channel
    assert store.messages == 5 and store.rejected_total == 4
    assert store.rejected == Counter({"invalid": 1, "unknown_topic": 1, "sender_mismatch": 1, "wrong_channel": 1})
    assert list(store.cars) == ["car-a"]
    assert "rejected 4" in panels.health_line(store, "mqtt://x", read_only=False, paused=False)


def test_the_health_line_follows_the_link(store: FleetStore) -> None:
    store.link_changed("connected")
    store.link_changed("reconnecting", "connection refused", 2)
    line = panels.health_line(store, "mqtt://h:1", read_only=True, paused=True)
    assert line.startswith("READ-ONLY · UPDATES PAUSED · mqtt://h:1 reconnecting (attempt 2)")  # flags lead
    store.link_changed("connected")
    assert panels.health_line(store, "mqtt://h:1", read_only=True, paused=False).startswith(
        "READ-ONLY · reconnected 1x · mqtt://h:1 connected")
    at = {"sent_at": cr.T0, "sim_time": cr.T0}
    store.ingest(store.topics.connection_status("gw-0"), encode(ConnectionStatus(
        sender="gw-0", **at, role="gateway", state=Liveness.ONLINE, vehicle_count=500)))
    store.ingest(store.topics.connection_status("gw-1"), encode(ConnectionStatus(
        sender="gw-1", **at, role="gateway", state=Liveness.OFFLINE, vehicle_count=300)))
    store.ingest(store.topics.connection_status("dispatcher"), encode(ConnectionStatus(
        sender="dispatcher", **at, role="dispatcher", state=Liveness.ONLINE)))
    line = panels.health_line(store, "mqtt://h:1", read_only=False, paused=False)
    assert "dispatcher 1/1 online · gateway 1/2 online, 500 cars" in line


def test_the_health_line_shouts_when_messages_were_dropped(store: FleetStore) -> None:
    assert "DROPPED" not in panels.health_line(store, "mqtt://h:1", read_only=False, paused=False)
    store.dropped = 12_345  # what the MQTT link's on_drop counts when the queue is full
    assert "DROPPED 12,345 (fell behind)" in panels.health_line(store, "mqtt://h:1", read_only=False, paused=False)


def test_header_reads_the_essays_equivalences_from_the_summary(store: FleetStore, topics: Topics) -> None:
    assert "waiting" in panels.totals_line(store)
    feed(store, topics.summary, cr.summary(1_000_000, "HW5", scale="essay: 1,000,000 HW5 cars"))
    line = panels.equivalence_line(store)
    assert "11,363 Fugakus" in line and "1,820 El Capitans" in line and "4,166 Frontiers" in line
    assert panels.totals_line(store).startswith("TOTAL 5.0 GTOPS")
    assert "cars 1,000,000" in panels.cars_line(store)
    feed(store, topics.summary, cr.summary(1_000_000, "HW6"))
    assert "7,283 El Capitans" in panels.equivalence_line(store)
    assert "int8" in panels.note_line() and "FP64" in panels.note_line()


def test_rate_and_history_follow_the_clock(store: FleetStore, topics: Topics) -> None:
    clock = ManualClock(100.0)
    store.tick(clock())
    for i in range(50):
        feed(store, topics.telemetry(f"car-{i}"), cr.telemetry(f"car-{i}"))
    clock.advance(0.5)
    store.tick(clock())
    assert store.msgs_per_s == 0.0  # not a whole sample period yet
    clock.advance(0.5)
    store.tick(clock())
    assert store.msgs_per_s == pytest.approx(50.0)
    assert list(store.history.series["cars"]) == [0.0, 50.0]
    feed(store, topics.summary, cr.summary(10))
    clock.advance(1.0)
    store.tick(clock())
    assert store.history.series["cars"][-1] == 10.0  # the summary wins over the store's own count
    assert store.history.series["earnings"][-1] == pytest.approx(123.45)


def test_jobs_follow_assignments_progress_and_states(store: FleetStore, topics: Topics) -> None:
    feed(store, topics.job_state("job-1"), cr.job_state("job-1", JobStatus.QUEUED, 0.0))
    feed(store, topics.commands("car-a"), cr.assignment("car-a", "job-1"))
    feed(store, topics.shards("car-a"), cr.progress("car-a", "job-1", done=4e5))
    job = store.jobs.rows["job-1"]
    shard = job.shards["asg-job-1-0"]
    assert (shard.vehicle_id, shard.progress, shard.status) == ("car-a", pytest.approx(0.4), "assigned")
    assert store.cars["car-a"].job_id == "job-1" and store.cars["car-a"].checkpoint_tera_ops == 4e5
    text = "\n".join(job_lines(job))
    assert "3 cars fail free_tops >= 8000" in text and "car-a" in text
    feed(store, topics.job_state("job-1"), cr.job_state("job-1", JobStatus.RUNNING, 0.5))
    assert store.jobs.rows["job-1"].status == "running" and store.jobs.count("running") == 1
    feed(store, topics.shards("car-a"), cr.result("car-a", "job-1"))
    drill = "\n".join(car_lines(store, "car-a"))
    assert "done 1,000,000 of 1,000,000 tera-ops   last checkpoint 1,000,000" in drill  # not "checkpoint 0"
    assert "finished job-1.s0" in drill


def test_offer_and_withdrawal_explain_the_car(store: FleetStore, topics: Topics) -> None:
    feed(store, topics.telemetry("car-a"), cr.telemetry("car-a"))
    feed(store, topics.offer("car-a"), cr.offer("car-a", 4000.0))
    assert store.cars["car-a"].free_tops == 4000.0
    assert "offering 4,000 TOPS" in "\n".join(car_lines(store, "car-a"))
    withdrawal = OfferWithdrawal(sender="car-a", sent_at=cr.T0, sim_time=cr.T0, offer_id="off-car-a",
                                 reason="owner returned")
    feed(store, topics.offer("car-a"), withdrawal)
    assert store.cars["car-a"].offered_tops == 0.0
    assert "owner returned" in "\n".join(car_lines(store, "car-a"))
    assert "not heard" in car_lines(store, "car-zz")[0]


def fleet(store: FleetStore, topics: Topics, n: int) -> None:
    for i in range(n):
        vid = f"car-{i:03d}"
        state = ComputeState.BUSY if i % 3 == 0 else ComputeState.IDLE
        feed(store, topics.telemetry(vid), cr.telemetry(vid, state, hardware=("HW5", "HW6")[i % 2],
                                                        soc=(i % 10) / 10, in_use=100.0 * i))


def test_node_order_sorts_and_filters(store: FleetStore, topics: Topics) -> None:
    fleet(store, topics, 30)
    order = NodeOrder()
    assert order.sync(store, 0.0) and order.ids == store.arrival
    order.set_sort("used", reverse=True)
    order.rebuild(store)
    assert order.ids[:2] == ["car-029", "car-028"]
    order.set_sort("soc")
    order.rebuild(store)
    socs = [store.cars[v].soc for v in order.ids]
    assert socs == sorted(socs)  # type: ignore[type-var]
    order.set_filter("hw6")
    order.rebuild(store)
    assert len(order.ids) == 15 and all(store.cars[v].hardware == "HW6" for v in order.ids)
    order.set_filter("!~^car-0[0-1]")
    order.rebuild(store)
    assert len(order.ids) == 10 and all(v.startswith("car-02") for v in order.ids)
    with pytest.raises(re.error, match=r"missing|unterminated"):
        order.set_filter("~car-(")
    assert order.filter.text == "!~^car-0[0-1]"  # a bad pattern leaves the old filter in force


def test_new_cars_are_appended_without_a_full_pass_above_the_limit(store: FleetStore, topics: Topics) -> None:
    fleet(store, topics, 10)
    order = NodeOrder(auto_resort_limit=5)
    order.set_filter("Bu")
    order.sync(store, 0.0)
    assert order.ids == ["car-000", "car-003", "car-006", "car-009"]
    feed(store, topics.telemetry("car-100"), cr.telemetry("car-100", ComputeState.BUSY))
    feed(store, topics.telemetry("car-101"), cr.telemetry("car-101"))
    feed(store, topics.telemetry("car-000"), cr.telemetry("car-000"))  # now idle: stays until a re-sort
    assert order.sync(store, 10.0)
    assert order.ids[-1] == "car-100" and "car-101" not in order.ids and "car-000" in order.ids
    assert not order.sync(store, 20.0)  # nothing new: no work
    order.rebuild(store)
    assert "car-000" not in order.ids
    strip = dict(state_strip(store))
    assert strip == {"Id": 8, "Bu": 4} and sum(strip.values()) == len(store.cars)


def test_small_fleets_resort_themselves(store: FleetStore, topics: Topics) -> None:
    fleet(store, topics, 5)
    order = NodeOrder(resort_every_s=1.0)
    order.set_sort("used", reverse=True)
    order.sync(store, 0.0)
    feed(store, topics.telemetry("car-001"), cr.telemetry("car-001", ComputeState.BUSY, in_use=9e4))
    order.sync(store, 0.5)
    assert order.ids[0] == "car-004"  # not due yet
    order.sync(store, 1.5)
    assert order.ids[0] == "car-001"
    cells = format_cells(store.cars["car-001"])
    assert cells[0].strip() == "car-001" and cells[1] == "Bu" and cells[5].strip() == "90,000"
