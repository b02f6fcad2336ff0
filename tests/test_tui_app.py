"""The control room against a real embedded broker, with scripted cars and a scripted dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiomqtt
from textual.command import CommandPalette
from textual.message import Message
from textual.widgets import Input, OptionList, Static

from mqttlink import Backoff, BrokerUrl, make_client, new_client_id
from protocol import (
    AddCars,
    AnyMessage,
    CancelJob,
    ComputeState,
    DriveAway,
    JobStatus,
    JobSubmission,
    MatchPolicy,
    OwnerMode,
    SetPolicy,
    Topics,
    decode,
    encode,
    utc_now,
)
from protocol.owners import CarEarnings, CarMoney, Money, SetOwnerMode
from tests.support import control_room as cr
from tests.support.brokers import TestBroker
from tests.support.waiting import wait_until
from tui.app import FleetroomApp
from tui.dialogs import ConfirmScreen
from tui.jobview import JobTable
from tui.screens import CarScreen, HelpScreen, JobScreen, SubmitJobScreen
from tui.watch import TelemetryWatch
from tui.widgets import NodeTable

SIZE = (140, 42)


def text_of(app: FleetroomApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


def table_text(app: FleetroomApp) -> str:
    table = app.query_one(NodeTable)
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


def row_tokens(app: FleetroomApp, vehicle_id: str) -> list[str]:
    """The visible row of one car, split into its cells (empty if it is not on screen)."""
    for line in table_text(app).splitlines():
        if line.startswith(vehicle_id + " "):
            return line.split()
    return []


async def send(client: aiomqtt.Client, topic: str, message: AnyMessage, retain: bool = False) -> None:
    await client.publish(topic, encode(message), qos=1, retain=retain)


@asynccontextmanager
async def listener(broker: TestBroker, topic: str) -> AsyncIterator[list[AnyMessage]]:
    """Collect every decoded message published on `topic` while the block runs."""
    got: list[AnyMessage] = []
    async with make_client(broker.url(), new_client_id("listen")) as client:
        await client.subscribe(topic, qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                got.append(decode(message.payload))

        task = asyncio.create_task(collect())
        try:
            yield got
        finally:
            task.cancel()


def control_room(broker: TestBroker, topics: Topics, read_only: bool = False) -> FleetroomApp:
    return FleetroomApp(broker.url(), topics, read_only=read_only, refresh_s=0.05,
                        backoff=Backoff(initial_s=0.05, max_s=0.3), watch=TelemetryWatch(settle_s=0.1))


async def in_view(app: FleetroomApp, *vids: str) -> None:
    """Wait until these cars are shown and the control room reads their telemetry (it reads no other)."""
    await wait_until(lambda: set(vids) <= app.telemetry_watch.subscribed, what=f"the telemetry of {vids} subscribed")


async def test_a_car_appears_changes_state_is_filtered_and_drilled_into(amqtt_broker: TestBroker,
                                                                      topics: Topics) -> None:
    app = control_room(amqtt_broker, topics)
    async with listener(amqtt_broker, topics.fleet_control) as fleet, app.run_test(size=SIZE) as pilot, \
            make_client(amqtt_broker.url(), new_client_id("cars")) as cars:
        await wait_until(lambda: app.store.link.state == "connected", what="the control room to connect")
        await send(cars, topics.vehicle_status("car-a"), cr.status("car-a"), retain=True)
        await send(cars, topics.vehicle_status("car-b"), cr.status("car-b", hardware="HW6"), retain=True)
        await in_view(app, "car-a", "car-b")
        await send(cars, topics.telemetry("car-a"), cr.telemetry("car-a"))
        await send(cars, topics.telemetry("car-b"), cr.telemetry("car-b", hardware="HW6"))
        await wait_until(lambda: "car-b" in table_text(app), what="both cars in the node view")
        assert row_tokens(app, "car-a")[:4] == ["car-a", "Id", "HW5", "80%"]
        await wait_until(lambda: text_of(app, "#strip").startswith("Id 2 "), what="the state strip")

        await send(cars, topics.telemetry("car-a"), cr.telemetry("car-a", ComputeState.BUSY, in_use=2500.0,
                                                                  shard="asg-x", earned=1.5))
        await wait_until(lambda: row_tokens(app, "car-a")[1:2] == ["Bu"], what="car-a to turn busy")
        await wait_until(lambda: text_of(app, "#strip").startswith("Id 1  Bu 1 "), what="the strip to follow")

        await pilot.press("slash", "H", "W", "6", "enter")
        await wait_until(lambda: app.order.ids == ["car-b"], what="the filter to keep only the HW6 car")
        await wait_until(lambda: "car-a" not in table_text(app), what="car-a to leave the table")
        await pilot.press("escape")
        assert app.order.ids == ["car-a", "car-b"]
        assert app.query_one(NodeTable).has_focus and not app.query_one("#filter", Input).value

        for vid, net in (("car-a", 2.67), ("car-b", 9.0)):  # the ledger's figures, retained, as the dispatcher sends
            money = Money(compute_gross=net + 0.4, energy_cost=0.4, net=net)
            await send(cars, topics.car_earnings(vid), CarEarnings(
                sender="dispatcher", sent_at=utc_now(), sim_time=utc_now(),
                car=CarMoney(vehicle_id=vid, owner_id="owner-01", owner_mode=OwnerMode.BOTH, money=money)), retain=True)
        await pilot.press("enter")
        assert isinstance(app.screen, CarScreen) and app.screen.vehicle_id == "car-a"
        await wait_until(lambda: "busy with asg-x" in text_of(app, "#car-body"), what="the car's drill-down")
        await wait_until(lambda: "net 2.67 USD" in text_of(app, "#car-body"), what="the ledger's figures of the car")
        assert "owner mode both" in text_of(app, "#car-body") and "1.50" not in text_of(app, "#car-body")
        assert set(app.store.earnings.cars) == {"car-a"}  # only the car in view: car-b's figures are not taken
        await pilot.press("m")  # the owner mode after the ledger's (both) is none: the fleet is told
        await wait_until(lambda: len(fleet) == 1, what="SetOwnerMode on control/fleet")
        await pilot.press("escape")
        assert not isinstance(app.screen, CarScreen)
    told = fleet[0]
    assert isinstance(told, SetOwnerMode) and (told.vehicle_id, told.owner_mode) == ("car-a", OwnerMode.NONE)


async def test_a_job_submitted_from_the_form_reaches_the_dispatcher_topic(amqtt_broker: TestBroker,
                                                                         topics: Topics) -> None:
    app = control_room(amqtt_broker, topics)
    async with listener(amqtt_broker, topics.job_submit) as submitted, app.run_test(size=SIZE) as pilot, \
            make_client(amqtt_broker.url(), new_client_id("dispatcher")) as dispatcher:
        await wait_until(lambda: app.ready, what="the control room to connect")
        notices: list[str] = []
        app.notify = lambda message, **_: notices.append(message)  # type: ignore[method-assign]
        await pilot.press("ctrl+n")
        app.screen.query_one("#form-name", Input).value = "pilot batch"
        await pilot.click("#form-submit")  # no dispatcher is online: refused, nothing is sent
        await wait_until(lambda: any("no dispatcher is online" in n for n in notices), what="the refusal")
        assert not app.published and not app.store.jobs.rows
        await wait_until(lambda: isinstance(app.screen, SubmitJobScreen), what="the form, open again")
        assert app.screen.query_one("#form-name", Input).value == "pilot batch"  # what was typed is kept
        await send(dispatcher, topics.connection_status("dispatcher"), cr.dispatcher_status(), retain=True)
        await wait_until(lambda: app.store.dispatcher_online, what="the dispatcher's online status")
        app.screen.query_one("#form-shards", Input).value = "8"
        app.screen.query_one("#form-max_parallel_shards", Input).value = "4"
        await pilot.click("#form-submit")
        await wait_until(lambda: len(submitted) == 1, what="the JobSubmission on jobs/submit")
    job = submitted[0]
    assert isinstance(job, JobSubmission)
    assert (job.name, job.shards, job.max_parallel_shards, job.sender) == ("pilot batch", 8, 4, "operator")
    assert app.store.jobs.rows[job.job_id].status == "submitted"


async def test_the_form_defaults_are_a_small_job_the_wire_contract_accepts() -> None:
    """The defaults, as the form reads them, make a valid JobSubmission any HW4 car can take."""
    app = FleetroomApp(BrokerUrl("127.0.0.1", 1, "operator"), Topics("t"), connect=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+n")
        assert isinstance(app.screen, SubmitJobScreen)
        form = app.screen.read_form()
    job = JobSubmission(**app.operator.envelope(), job_id="job-x", name=form.name,
                        total_work_tera_ops=form.total_work_tera_ops, shards=form.shards,
                        min_tops_per_car=form.min_tops_per_car, max_parallel_shards=form.max_parallel_shards,
                        priority=form.priority)
    assert job.total_work_tera_ops / job.shards / 125 < 60  # under a simulated minute a shard on HW4
    assert job.min_tops_per_car <= 125


async def test_a_bad_form_is_refused_in_place(amqtt_broker: TestBroker, topics: Topics) -> None:
    app = control_room(amqtt_broker, topics)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(lambda: app.ready, what="the control room to connect")
        await pilot.press("ctrl+n")
        app.screen.query_one("#form-shards", Input).value = "many"
        await pilot.click("#form-submit")
        assert isinstance(app.screen, SubmitJobScreen)
        assert "not a number" in str(app.screen.query_one("#form-error", Static).content)
        await pilot.press("escape")
        assert not app.published


async def test_jobs_are_shown_drilled_into_and_cancelled(amqtt_broker: TestBroker, topics: Topics) -> None:
    app = control_room(amqtt_broker, topics)
    posted: list[Message] = []
    async with listener(amqtt_broker, topics.dispatcher_control) as control, \
            app.run_test(size=SIZE, message_hook=posted.append) as pilot, \
            make_client(amqtt_broker.url(), new_client_id("dispatcher")) as dispatcher:
        await wait_until(lambda: app.ready, what="the control room to connect")
        await send(dispatcher, topics.connection_status("dispatcher"), cr.dispatcher_status(), retain=True)
        await send(dispatcher, topics.job_state("job-0"), cr.job_state("job-0", JobStatus.DONE, 1.0), retain=True)
        await send(dispatcher, topics.job_state("job-1"), cr.job_state("job-1", JobStatus.QUEUED, 0.0), retain=True)
        await send(dispatcher, topics.commands("car-a"), cr.assignment("car-a", "job-1"))
        await send(dispatcher, topics.shards("car-a"), cr.progress("car-a", "job-1", done=5e5))
        await wait_until(lambda: "job-1" in app.store.jobs.rows and app.store.jobs.rows["job-1"].shards
                         and app.store.jobs.rows["job-1"].shards["asg-job-1-0"].done_tera_ops == 5e5,
                         what="the job and its shard")
        await pilot.press("j")
        await wait_until(lambda: app.query_one(JobTable).row_count == 2, what="the jobs' rows")
        assert app.query_one(JobTable).selected == "job-1"  # the queued job sorts above the finished one
        await pilot.press("enter")
        assert isinstance(app.screen, JobScreen)
        body = str(app.screen.query_one("#job-body", Static).content)
        assert "3 cars fail free_tops >= 8000" in body and "car-a" in body and "50%" in body
        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")  # no: nothing is sent
        await wait_until(lambda: isinstance(app.screen, JobScreen), what="back on the job")
        await pilot.press("c")
        await wait_until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation again")
        assert control == []
        await pilot.press("y")
        await wait_until(lambda: len(control) == 1, what="CancelJob on control/dispatcher")
        asked = {id(m): m.job_id for m in posted if isinstance(m, JobScreen.CancelRequested)}  # seen as it bubbles
        assert list(asked.values()) == ["job-1", "job-1"]  # asked twice, confirmed once
        await pilot.press("escape")
        await app.set_policy(MatchPolicy.CHEAPEST)
        await wait_until(lambda: len(control) == 2, what="SetPolicy on control/dispatcher")
    assert isinstance(control[0], CancelJob) and control[0].job_id == "job-1"
    assert isinstance(control[1], SetPolicy) and control[1].policy is MatchPolicy.CHEAPEST


async def test_the_header_shows_the_retained_summary_and_the_essays_equivalences(
        amqtt_broker: TestBroker, topics: Topics) -> None:
    async with make_client(amqtt_broker.url(), new_client_id("dispatcher")) as dispatcher:
        summary = cr.summary(1_000_000, "HW5", busy=10, running=3, queued=2, scale="essay: 1,000,000 HW5 cars")
        await send(dispatcher, topics.summary, summary, retain=True)
    app = control_room(amqtt_broker, topics)
    async with app.run_test(size=SIZE):
        await wait_until(lambda: "Fugakus" in text_of(app, "#equivalences"), what="the summary in the header")
        header = text_of(app, "#equivalences")
        assert "11,363 Fugakus" in header and "1,820 El Capitans" in header and "4,166 Frontiers" in header
        assert text_of(app, "#totals").startswith("TOTAL 5.0 GTOPS")
        assert "jobs running 3  queued 2" in text_of(app, "#cars")
        assert "int8" in text_of(app, "#note")


async def test_read_only_publishes_nothing(amqtt_broker: TestBroker, topics: Topics) -> None:
    app = control_room(amqtt_broker, topics, read_only=True)
    async with listener(amqtt_broker, topics.root + "/#") as everything, app.run_test(size=SIZE) as pilot, \
            make_client(amqtt_broker.url(), new_client_id("marker")) as marker:
        await wait_until(lambda: app.ready, what="the control room to connect")
        await pilot.press("ctrl+n")
        assert not isinstance(app.screen, SubmitJobScreen)
        await app.set_policy(MatchPolicy.CHEAPEST)
        await app.add_cars(100)
        await app.drive_away("car-a")
        await send(marker, topics.vehicle_status("car-m"), cr.status("car-m"))
        await wait_until(lambda: len(everything) >= 1, what="the marker message")
        assert "READ-ONLY" in text_of(app, "#health")
    assert [m.kind for m in everything] == ["vehicle_status"] and not app.published


async def test_bad_messages_and_a_broker_restart_are_survived(amqtt_broker: TestBroker, topics: Topics) -> None:
    app = control_room(amqtt_broker, topics)
    async with app.run_test(size=SIZE):
        await wait_until(lambda: app.store.link.state == "connected", what="the control room to connect")
        async with make_client(amqtt_broker.url(), new_client_id("bad")) as bad:
            await bad.publish(topics.vehicle_status("car-a"), b"{broken", qos=1)
            await bad.publish(topics.root + "/nowhere", b"{}", qos=1)
        await wait_until(lambda: "rejected 2" in text_of(app, "#health"), what="two rejections shown")
        await amqtt_broker.restart()
        await wait_until(lambda: app.store.link.reconnects >= 1, timeout=20, what="a reconnection")
        await wait_until(lambda: "connected · " in text_of(app, "#health")
                         and "reconnected 1x" in text_of(app, "#health"), what="the health bar to say so")
        async with make_client(amqtt_broker.url(), new_client_id("cars")) as cars:
            await send(cars, topics.vehicle_status("car-z"), cr.status("car-z"))
        await wait_until(lambda: "car-z" in table_text(app), what="a car heard after the restart")
        assert app.is_running


async def test_help_palette_pause_and_drive_away(amqtt_broker: TestBroker, topics: Topics) -> None:
    app = control_room(amqtt_broker, topics)
    posted: list[Message] = []
    async with listener(amqtt_broker, topics.fleet_control) as fleet, \
            app.run_test(size=SIZE, message_hook=posted.append) as pilot, \
            make_client(amqtt_broker.url(), new_client_id("cars")) as cars:
        await wait_until(lambda: app.ready, what="the control room to connect")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        await send(cars, topics.vehicle_status("car-a"), cr.status("car-a"))
        await wait_until(lambda: app.order.ids == ["car-a"], what="car-a in the node view")
        await pilot.press("d")
        await wait_until(lambda: len(fleet) == 1, what="DriveAway on control/fleet")
        await pilot.press("enter")
        assert isinstance(app.screen, CarScreen)
        await pilot.press("d")  # the car's screen posts a message up; the app sends the command
        await wait_until(lambda: len(fleet) == 2, what="DriveAway from the car's screen")
        asked = {id(m): m.vehicle_id for m in posted if isinstance(m, CarScreen.DriveAwayRequested)}
        assert list(asked.values()) == ["car-a"]
        await pilot.press("escape")

        await pilot.press("ctrl+p")
        await pilot.press(*"add 100 cars")
        await wait_until(lambda: isinstance(app.screen, CommandPalette) and "Add 100 cars" in str(
            app.screen.query_one(OptionList).get_option_at_index(0).prompt), what="the palette to offer it")
        await pilot.press("enter")
        await wait_until(lambda: len(fleet) == 3, what="AddCars on control/fleet")

        await pilot.press("p")
        await wait_until(lambda: "UPDATES PAUSED" in text_of(app, "#health"), what="the pause to show")
        await send(cars, topics.vehicle_status("car-b"), cr.status("car-b"))
        await wait_until(lambda: "car-b" in app.store.cars, what="car-b in the store while paused")
        await pilot.press("p")
        await wait_until(lambda: "car-b" in app.order.ids, what="car-b shown after resuming")
    assert [(m.kind, m.vehicle_id) for m in fleet[:2] if isinstance(m, DriveAway)] == [("drive_away", "car-a")] * 2
    assert isinstance(fleet[2], AddCars) and fleet[2].count == 100


async def test_paint_rate_is_not_message_rate(amqtt_broker: TestBroker, topics: Topics) -> None:
    """A burst of MQTT messages reaches the store without a Textual message per MQTT message.

    What Textual does scales with paints (every 0.5 s here: a few updates and layouts each),
    not with the number of MQTT messages.
    """
    posted: list[str] = []
    app = FleetroomApp(amqtt_broker.url(), topics, refresh_s=0.5)
    burst = 2_000
    payloads = [(topics.vehicle_status(f"car-{i % 400:03d}"), encode(cr.status(f"car-{i % 400:03d}")))
                for i in range(burst)]
    async with app.run_test(size=SIZE, message_hook=lambda m: posted.append(type(m).__name__)) as pilot, \
            make_client(amqtt_broker.url(), new_client_id("cars")) as cars:
        await wait_until(lambda: app.store.link.state == "connected", what="the control room to connect")
        await pilot.pause()
        before = len(posted)
        for topic, payload in payloads:
            await cars.publish(topic, payload, qos=0)
        await wait_until(lambda: app.store.messages >= burst, timeout=30, what="the whole burst in the store")
        await wait_until(lambda: app.order.ids[-1:] == ["car-399"], what="the last car painted")
        during = len(posted) - before
    assert len(app.store.cars) == 400 and app.store.rejected_total == 0
    assert during < burst / 4, f"{during} Textual messages for {burst} MQTT messages"
