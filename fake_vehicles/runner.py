"""The fleet process: the pure fleet core, its connections, and one loop in one thread.

Each tick reads the simulation clock, lets cars join, processes their events, publishes what
they said, and then spends the rest of the tick on the sweep (offers and telemetry) for as
long as the sockets keep up. Telemetry is QoS 0 and best effort: when the broker or the
network cannot take more, the sweep waits instead of queueing without bound. With a metrics
port, a snapshot for `/metrics` is taken about once a second (`fake_vehicles.metrics`).
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

import paho.mqtt.client as mqtt

from fake_vehicles.commands import CommandHandler
from fake_vehicles.fleet import Fleet, LinkEvent
from fake_vehicles.fleet_telemetry import FleetTelemetryEncoder
from fake_vehicles.metrics import FleetMetrics, take_snapshot
from fake_vehicles.network import Link, Net, Will, settled
from fake_vehicles.outlet import Outlet
from fake_vehicles.rivals import NameGuard, Verdict, new_instance
from mqttlink import BrokerUrl, silent_close_hint
from protocol.base import utc_now
from protocol.clock import SimClock
from protocol.fleet_telemetry import CONNECTIVITY_DELIVERY
from protocol.frames import ROSTER_BLOCK
from protocol.topics import DELIVERY, Channel
from protocol.vehicle_messages import ConnectionStatus, Liveness

log = logging.getLogger(__name__)

TICK_S = 0.05
SWEEP_BATCH = 256
JOIN_BATCH = ROSTER_BLOCK  # a gateway's batch of joining cars fills one roster block
JOIN_SHARE = 0.9  # of a tick, at most, for joining cars (and announcing them again) while some wait
PLACE_SHARE = 0.95  # ... and up to here for placing the cars that joined unplaced, before the sweep
FREEZE_EVERY = 100_000  # cars joined between two gc.freeze(): cars live as long as the process
GOODBYE_TIMEOUT_S = 30.0
CONFIRM_HEARTBEATS = 2.5  # how long a suspected rival has to prove it is alive, in heartbeat periods


INJECTED = ("wrong_results", "vanished", "fault_silent", "fault_missing_connectivity",
            "fault_duplicate_connectivity")  # the fleet's own counts of the faults it injected


def injected_text(counts: Mapping[str, int]) -> str:
    """`; injected: wrong_results 3, vanished 1` for the faults injected so far, or nothing."""
    shown = ", ".join(f"{name} {counts[name]:,}" for name in INJECTED if counts.get(name))
    return f"; injected: {shown}" if shown else ""


class StartupError(RuntimeError):
    """The fleet cannot start (broker unreachable, login refused, its cars run elsewhere); one line."""


@dataclass
class RunSettings:
    """How the loop runs: growth, duration, progress lines, and who connects how."""

    url: BrokerUrl
    gateway_id: str  # the process's name: its gateway user and the level of its process status
    per_car: bool
    local_start: float  # simulation time (local seconds) at wall start
    car_url: Callable[[str], BrokerUrl] | None = None  # per-car mode: the URL a car logs in with
    grow_to: int | None = None
    grow_over_s: float = 0.0
    duration_s: float | None = None
    progress_every_s: float = 5.0
    progress_out: TextIO = sys.stderr
    metrics_port: int | None = None  # serve /metrics on this port (0: any free one); None: not at all
    metrics_host: str = "127.0.0.1"
    fleet_telemetry: FleetTelemetryEncoder | None = None  # also publish fleet-telemetry records


class Runner:
    """Runs one fleet until `stop` is set (or the duration ends), then says goodbye."""

    def __init__(self, fleet: Fleet, clock: SimClock, settings: RunSettings, stop: threading.Event) -> None:
        self.fleet, self.clock, self.settings, self.stop = fleet, clock, settings, stop
        self.net = Net()
        self.car_links: dict[int, Link] = {}
        self._frozen = 0  # cars there were at the last gc.freeze()
        self.reconnects = 0  # connections that came back after being lost
        self.metrics = FleetMetrics()
        self.running = False  # True once `run` has begun
        self.started = time.monotonic()
        self._last_report = (self.started, 0)
        topics = fleet.encoder.topics
        # the process statuses first: their retained messages have all arrived when the last
        # subscription is acknowledged, which is when the name guard looks at them
        subs: tuple[str, ...] = (topics.all_connections, topics.fleet_control) if settings.per_car else (
            topics.all_connections, topics.all_commands, topics.fleet_control)
        self.announced_at = utc_now()  # wall time of the fleet's latest announcement of its cars
        self._dispatcher_seen: datetime | None = None
        self.instance = new_instance()
        confirm_s = CONFIRM_HEARTBEATS * settings.progress_every_s
        self.guard = NameGuard(settings.gateway_id, self.instance, confirm_s)
        self.inbound = CommandHandler(fleet, on_dispatcher_online=self._dispatcher_online,
                                      on_gateway_status=self._gateway_status)
        fleet.encoder.stamp(utc_now(), settings.local_start)
        self.gateway = self.net.add(Link(
            self.net, settings.url, settings.gateway_id,
            will=Will(topics.connection_status(settings.gateway_id), self._status(Liveness.OFFLINE, 0),
                      DELIVERY[Channel.CONNECTION_STATUS]),
            subscriptions=subs, on_message=self._on_message, on_connected=self._gateway_connected,
        ))
        self.out = Outlet(fleet, self.net, self.gateway, self.car_links, per_car=settings.per_car,
                          fleet_telemetry=settings.fleet_telemetry, speaking=self.speaking)

    @property
    def published(self) -> int:
        """Messages handed to a connection so far."""
        return self.out.published

    @published.setter
    def published(self, value: int) -> None:
        self.out.published = value

    # start-up ---------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Connect the process's own connection and claim its name, failing loud if it cannot.

        Raises `StartupError` if the broker cannot be used or another live fleet process runs
        this one's cars (then it leaves without a trace: no Last Will, nothing published).
        """
        url = self.settings.url
        self.serve_metrics()
        try:
            self.gateway.start()
        except OSError as exc:
            raise StartupError(f"cannot reach the MQTT broker at {url}: {exc.strerror or exc}") from None
        deadline = time.monotonic() + timeout
        while not self.gateway.ready:
            if self.gateway.tls_refusal is not None:
                raise StartupError(f"TLS with the MQTT broker at {url} failed: {self.gateway.tls_refusal}")
            if self.gateway.refusal is not None:
                raise StartupError(f"the MQTT broker at {url} refused the login of "
                                   f"{url.username or 'anonymous'!r}: {self.gateway.refusal}")
            if time.monotonic() > deadline:
                hint = silent_close_hint(url) if self.gateway.tls_closed else ""
                raise StartupError(f"no answer from the MQTT broker at {url} within {timeout:.0f}s{hint}")
            self.net.poll(0.05)
        deadline = time.monotonic() + timeout + self.guard.confirm_s
        while not self.guard.claimed and self.guard.conflict is None and time.monotonic() < deadline:
            self.net.poll(0.05)
            self._settle_name()
        if not self.guard.claimed:
            self.leave_quietly()
            raise StartupError(self.guard.conflict or f"could not claim the name {self.settings.gateway_id} on "
                               f"{url}: the connection kept dropping")

    def serve_metrics(self) -> None:
        """Start serving /metrics if a port is set; `StartupError` if it cannot be bound."""
        s = self.settings
        if s.metrics_port is not None and self.metrics.endpoint is None:
            try:
                self.metrics.serve(s.metrics_host, s.metrics_port)
            except OSError as exc:
                raise StartupError(f"cannot serve metrics on {s.metrics_host}:{s.metrics_port}: "
                                   f"{exc.strerror or exc}") from None
            self.snapshot()

    def snapshot(self) -> None:
        """Hand the metrics a fresh snapshot of the fleet and its connections."""
        self.metrics.observe(take_snapshot(self.fleet, self.net, self.out.published_by_channel, self.reconnects))

    def speaking(self) -> bool:
        """True while the process's own connection is up and its name is claimed on it."""
        link = self.gateway
        return link.ready and self.guard.may_speak(link.connects)

    def _status(self, state: Liveness, cars: int) -> bytes:
        return self.fleet.encoder.connection_status(self.settings.gateway_id, state, cars, self.instance,
                                                    frames=self.fleet.frames is not None)

    def heartbeat(self) -> None:
        """The connection's retained status again, with the cars it speaks for: liveness in gateway mode."""
        if self.speaking():
            cars = len(self.fleet.cars) - self.fleet.silent
            topic = self.fleet.encoder.topics.connection_status(self.settings.gateway_id)
            status = DELIVERY[Channel.CONNECTION_STATUS]
            self.gateway.publish(topic, self._status(Liveness.ONLINE, cars), status.qos, status.retain)

    def _gateway_connected(self, link: Link) -> None:
        """Subscribed, the retained process statuses read: claim the name, or wait for a suspect to speak."""
        self.reconnects += link.connects > 1
        if self.guard.begin_check(link.connects, time.monotonic()):
            self._claimed(link)
        else:
            log.info("%s: %s held the name a moment ago; waiting up to %.0fs to see whether it is alive",
                     self.settings.gateway_id, ", ".join(self.guard.waiting_for), self.guard.confirm_s)

    def _settle_name(self) -> None:
        """Claim the name once its suspects proved stale (the check ends by itself, or by a message)."""
        link = self.gateway
        if link.ready and not self.guard.claimed and self.guard.poll(time.monotonic()):
            log.warning("%s: no sign of life from the fleet process that held the name; taking it",
                        self.settings.gateway_id)
            self._claimed(link)

    def _claimed(self, link: Link) -> None:
        self.heartbeat()
        if link.connects > 1 and not self.settings.per_car:
            if self.settings.fleet_telemetry is not None:
                self.settings.fleet_telemetry.forget_all()
            log.info("%s: reconnected; announcing %d cars again", self.settings.gateway_id, len(self.fleet.cars))
            self.announced_at = utc_now()
            self.fleet.reannounce_all()

    def _gateway_status(self, status: ConnectionStatus, retained: bool) -> None:
        """Another fleet process's status: stop if it proves a live rival, speak again if it gave way."""
        verdict = self.guard.seen(status, self.gateway.connects, retained=retained)
        if verdict is Verdict.CONFLICT and not self.stop.is_set():
            self.stop.set()
            if self.running:  # at start-up, `connect` says it in one line
                log.error("%s", self.guard.conflict)
        elif verdict is Verdict.REASSERT:
            log.warning("%s: %s (a later instance) spoke for our cars; announcing them again",
                        self.settings.gateway_id, status.sender)
            self.heartbeat()
            self.announced_at = utc_now()
            self.fleet.reannounce_all()

    def _car_connected(self, link: Link) -> None:
        """A car's connection is up: it announces itself (anything sent before was not published)."""
        car = self.fleet.by_id.get(link.name)
        self.reconnects += link.connects > 1
        if car is not None:
            if self.settings.fleet_telemetry is not None and link.connects > 1:
                self.settings.fleet_telemetry.lost(car.vehicle_id)
            self.announced_at = utc_now()
            self.fleet.reannounce(car, "reconnected" if link.connects > 1 else link.hello)

    def _dispatcher_online(self, sent_at: datetime) -> None:
        """A dispatcher that came online after our cars announced themselves missed their offers
        (offers are not retained): announce every car again. This closes the race after a broker
        restart in which the fleet reconnects before the dispatcher."""
        if sent_at == self._dispatcher_seen:
            return
        self._dispatcher_seen = sent_at
        if sent_at > self.announced_at:
            log.info("the dispatcher came online after our announcement; announcing %d cars again",
                     len(self.fleet.cars))
            self.fleet.counts["reannounced_for_dispatcher"] += 1
            self.announced_at = utc_now()
            self.fleet.reannounce_all()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        self.inbound.handle(topic, payload, self.fleet.t, retained=retained)

    # per-car connections ---------------------------------------------------------------------
    def _link_events(self) -> None:
        events = self.fleet.link_events
        while events:
            event, index = events.popleft()
            if event is LinkEvent.DROP:
                self._vanished(index)
            if not self.settings.per_car:
                continue
            if event is LinkEvent.OPEN:
                self._open_car(index)
            else:
                link = self.car_links.get(index)
                if link is not None:
                    link.drop()

    def _vanished(self, index: int) -> None:
        """A car went silent: fleet-telemetry's server would publish its DISCONNECTED; the process's connection does."""
        ft = self.settings.fleet_telemetry
        if ft is not None and self.speaking():
            event = ft.disconnected(self.fleet.cars[index].vehicle_id, self.fleet.encoder.sim_time)
            self.out.published += self.out.records(self.gateway, [event] if event else [], CONNECTIVITY_DELIVERY)

    def _open_car(self, index: int) -> None:
        car = self.fleet.cars[index]
        link = self.car_links.get(index)
        if link is None:
            assert self.settings.car_url is not None
            encoder, vid = self.fleet.encoder, car.vehicle_id
            link = self.net.add(Link(
                self.net, self.settings.car_url(vid), vid,
                will=Will(encoder.topic(vid, Channel.VEHICLE_STATUS),
                          encoder.status(car, Liveness.OFFLINE, "connection lost"), DELIVERY[Channel.VEHICLE_STATUS]),
                subscriptions=(encoder.topics.commands(vid),), on_message=self._on_message,
                on_connected=self._car_connected,
            ))
            self.car_links[index] = link
        link.hello = "restarted" if link.connects else ""
        link.connects = 0
        try:
            link.start()
        except OSError as exc:
            link.retry_later(exc)

    # the loop -------------------------------------------------------------------------------
    def sim_now(self) -> float:
        return self.settings.local_start + self.clock.elapsed_sim_s()

    def pump(self, final: bool = False) -> None:
        """Hand what the fleet said to the connections (see `Outlet.pump`)."""
        self.out.pump(final)

    def tick(self) -> None:
        """One round: join, events, publish, then sweep until the tick's time is used."""
        start = time.monotonic()
        deadline = start + TICK_S
        self._settle_name()
        t = self.sim_now()
        self.fleet.encoder.stamp(utc_now(), t)
        self._grow(start)
        per_car, fleet = self.settings.per_car, self.fleet
        self._join(t, start + TICK_S * JOIN_SHARE)
        while fleet.unplaced and time.monotonic() < start + TICK_S * PLACE_SHARE:
            fleet.place_some(SWEEP_BATCH)
        fleet.advance(t, place_max=0)
        self._link_events()
        self.pump()
        while fleet.sweep_due and time.monotonic() < deadline:
            if self.net.backlogged or not (per_car or self.speaking()):
                self.net.poll(max(0.0, deadline - time.monotonic()))
                continue
            fleet.sweep(t, SWEEP_BATCH)
            self.pump()
            self.net.poll(0)
        self.pump(final=True)
        self.net.poll(max(0.0, deadline - time.monotonic()))

    def _join(self, t: float, until: float) -> None:
        """Let waiting cars join (and announce cars again) a batch at a time until `until`, at the sockets' pace."""
        fleet, per_car = self.fleet, self.settings.per_car
        batch = JOIN_BATCH if not per_car else 50
        while (fleet.pending or fleet.reannouncing) and (now := time.monotonic()) < until:
            if self.net.backlogged:  # the sockets are behind: wait for them (within the share), do not queue more
                self.net.poll(min(0.005, until - now))
                continue
            fleet.reannounce_some(batch)
            fleet.join(t, batch, place=per_car)  # a gateway places its cars just after announcing them
            self._link_events()
            self.pump()
        if len(fleet.cars) >= self._frozen + FREEZE_EVERY:
            # A full collection walks every car (about 0.5 s at a million, several of them while a fleet
            # joins); frozen, they are left out of it. The join goes 10-20% faster.
            gc.freeze()
            self._frozen = len(fleet.cars)

    def _grow(self, now: float) -> None:
        s = self.settings
        if s.grow_to is None or s.grow_to <= self.fleet.total:
            return
        base = self.fleet.config.count
        share = 1.0 if s.grow_over_s <= 0 else min(1.0, (now - self.started) / s.grow_over_s)
        self.fleet.grow_to(base + int((s.grow_to - base) * share))

    def run(self) -> int:
        """Run until stopped; return the exit code: 0, or 2 if another fleet process runs our cars."""
        self.started = time.monotonic()
        self._last_report = (self.started, 0)
        self.running = True
        end = None if self.settings.duration_s is None else self.started + self.settings.duration_s
        while not self.stop.is_set():
            self.tick()
            now = time.monotonic()
            if now - self._last_report[0] >= self.settings.progress_every_s:
                self.report(now)
                self.heartbeat()
                self.net.flush()
            if self.metrics.due(now):
                self.snapshot()
            if end is not None and now >= end:
                break
        if self.guard.conflict is not None:
            self.leave_quietly()  # the cars are the other process's now: no goodbye, no Last Will
            return 2
        self.goodbye()
        return 0

    def report(self, now: float) -> None:
        then, count = self._last_report
        rate = (self.published - count) / max(1e-9, now - then)
        self._last_report = (now, self.published)
        f = self.fleet
        s = f.summary()
        offering = f"{s['offering']} offering, " if s["offering"] >= 0 else ""
        unplaced = f" ({len(f.unplaced)} unplaced)" if f.unplaced else ""  # joined, not yet placed in their day
        print(f"vehicles: {len(f.cars)} cars{unplaced}: {s['online']} online, {s['parked']} parked, {s['busy']} busy, "
              f"{offering}{rate:,.0f} msgs/s, {f.counts['refused']} refused, {f.counts['rejected']} bad in"
              f"{injected_text(f.counts)}", file=self.settings.progress_out, flush=True)

    def goodbye(self) -> None:
        """Every car offline (a gateway: in its rosters), a batch at a time, then the connection; a clean disconnect.

        QoS 1 acknowledgements come back in order on each connection, so waiting for the last
        message of each connection is waiting for all of them.
        """
        f = self.fleet
        f.encoder.stamp(utc_now(), self.sim_now())
        deadline = time.monotonic() + max(GOODBYE_TIMEOUT_S, len(f.cars) / 20_000)
        last: dict[Link, mqtt.MQTTMessageInfo] = {}
        for start in range(0, len(f.cars), JOIN_BATCH):
            f.say_goodbye(range(start, min(start + JOIN_BATCH, len(f.cars))))
            last.update(self.out.goodbyes())
            self.net.flush()
            while self.net.backlogged and time.monotonic() < deadline:
                self.net.poll(0.02)
        status = DELIVERY[Channel.CONNECTION_STATUS]
        last[self.gateway] = self.gateway.publish(
            f.encoder.topics.connection_status(self.settings.gateway_id),
            self._status(Liveness.OFFLINE, 0), status.qos, status.retain)
        while time.monotonic() < deadline and not all(settled(i) for i in last.values()):
            self.net.flush()
            self.net.poll(0.02)
        self.leave_quietly()

    def leave_quietly(self, timeout: float = 5.0) -> None:
        """Disconnect every connection cleanly, so that the broker discards their Last Wills."""
        self.metrics.close()
        for link in self.net.links:
            link.close()
        deadline = time.monotonic() + timeout
        while True:
            self.net.flush()
            self.net.poll(0.02)
            if all(link.client.socket() is None for link in self.net.links) or time.monotonic() > deadline:
                return
