"""Where what a fleet says leaves the process: its outbox and a gateway's frames, handed to the connections.

Per-car messages go on the car's own connection (per-car mode) or the gateway's; a gateway's
statuses and offers go out as rosters and offer frames (`fake_vehicles.frames`); fleet-telemetry
records (`--telemetry-format fleet-telemetry`) follow the messages they belong to. Publishing
only queues packets; `Net.flush` writes them. Counts what it handed on, by channel.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt

from fake_vehicles.fleet import Fleet
from fake_vehicles.fleet_telemetry import FleetTelemetryEncoder, Record
from fake_vehicles.network import Link, Net
from protocol.topics import DELIVERY, Channel, Delivery
from protocol.vehicle_messages import Liveness


class Outlet:
    """Hands one fleet's outbox and frames to its connections."""

    def __init__(self, fleet: Fleet, net: Net, gateway: Link, car_links: dict[int, Link], *, per_car: bool,
                 fleet_telemetry: FleetTelemetryEncoder | None, speaking: Callable[[], bool]) -> None:
        self.fleet, self.net, self.gateway, self.car_links = fleet, net, gateway, car_links
        self.per_car, self.ft, self.speaking = per_car, fleet_telemetry, speaking
        self.published = 0
        self.published_by_channel: Counter[Channel] = Counter()

    def pump(self, final: bool = False) -> None:
        """Hand the fleet's frames and outbox to the connections and write them; `final`: the tick's last offers too."""
        if self.fleet.frames is not None:
            self.frames(final)
        outbox = self.fleet.outbox
        if not outbox:
            return
        gateway = None if self.per_car else self.gateway
        gateway_up = self.speaking()
        links, ft, sim_time = self.car_links, self.ft, self.fleet.encoder.sim_time
        n = 0
        while outbox:
            index, channel, topic, payload = outbox.popleft()
            link = gateway or links.get(index)
            if link is None or not link.wanted:
                continue
            up = gateway_up if gateway is not None else link.connected
            if not up and channel is not Channel.SHARDS:
                self.fleet.counts["unsent_while_disconnected"] += 1  # announced again on reconnect
                continue
            delivery = DELIVERY[channel]
            link.publish(topic, payload, delivery.qos, delivery.retain)
            self.published_by_channel[channel] += 1
            n += 1
            if ft is not None:
                n += self.records(link, *ft.following(self.fleet.cars[index], channel, sim_time))
        self.published += n
        self.net.flush()

    def frames(self, final: bool, *, offers_first: bool = False) -> mqtt.MQTTMessageInfo | None:
        """Publish the changed blocks' rosters and whole offer frames (`final`: every offer); the last one's info.

        Rosters go first, so that a receiver knows a car before its offer; at goodbye (`offers_first`)
        the withdrawals go before the rosters that list their cars offline.
        """
        frames, fleet = self.fleet.frames, self.fleet
        assert frames is not None
        batches = [(Channel.ROSTER, frames.rosters(fleet.cars)), (Channel.OFFER_FRAME, frames.offer_frames(final))]
        if offers_first:
            batches.reverse()
        changes, frames.status_changes = frames.status_changes, []
        if not self.speaking():
            fleet.counts["unsent_while_disconnected"] += sum(len(batch) for _, batch in batches)
            return None  # announced again on reconnect
        last = None
        for channel, batch in batches:
            delivery = DELIVERY[channel]
            for topic, payload in batch:
                last = self.gateway.publish(topic, payload, delivery.qos, delivery.retain)
            self.published_by_channel[channel] += len(batch)
            self.published += len(batch)
        ft = self.ft
        if ft is not None:  # fleet-telemetry's connectivity events follow the status changes the rosters carry
            for index in changes:
                car = fleet.cars[index]
                records, delivery = ft.following(car, Channel.VEHICLE_STATUS, fleet.encoder.sim_time,
                                                 leaving=car.status_state is not Liveness.ONLINE)
                self.published += self.records(self.gateway, records, delivery)
        return last

    def goodbyes(self) -> dict[Link, mqtt.MQTTMessageInfo]:
        """Publish the outbox and frames `Fleet.say_goodbye` left; the last message's info on each connection."""
        f, ft = self.fleet, self.ft
        last: dict[Link, mqtt.MQTTMessageInfo] = {}
        while f.outbox:
            index, channel, topic, payload = f.outbox.popleft()
            link = self.car_links.get(index) if self.per_car else self.gateway
            if link is not None and link.connected:
                delivery = DELIVERY[channel]
                last[link] = link.publish(topic, payload, delivery.qos, delivery.retain)
                if ft is not None:  # each DISCONNECTED after its car's offline status
                    records, delivery = ft.following(f.cars[index], channel, f.encoder.sim_time, leaving=True)
                    for record_topic, record in records:
                        last[link] = link.publish(record_topic, record, delivery.qos, delivery.retain)
        if f.frames is not None:  # every roster once more, its cars offline, after their withdrawals
            info = self.frames(final=True, offers_first=True)
            if info is not None:
                last[self.gateway] = info
        return last

    @staticmethod
    def records(link: Link, records: list[Record], delivery: Delivery) -> int:
        """Publish fleet-telemetry records on `link`; how many."""
        for topic, payload in records:
            link.publish(topic, payload, delivery.qos, delivery.retain)
        return len(records)
