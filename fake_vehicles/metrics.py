"""The fleet process's `/metrics` for Prometheus: its cars, what it published, its connections.

The fleet runs in one thread and the HTTP server in another: the runner takes a `FleetSnapshot`
(an immutable value) about once a second, and a scrape renders the latest one, so a scrape never
walks the fleet's live structures. The collector has its own registry, not the global one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fake_vehicles.fleet import Fleet
from fake_vehicles.network import Net
from protocol.topics import Channel

log = logging.getLogger(__name__)
PREFIX = "fleetroom_fleet_"
SNAPSHOT_EVERY_S = 1.0

COUNTED = {  # fleet core counts exported as counters: key -> (metric name, help)
    "refused": ("shards_refused", "Shard assignments the cars refused"),
    "rejected": ("commands_rejected", "Inbound messages the fleet rejected as invalid"),
    "results": ("results", "Shard results the cars sent"),
    "preemptions": ("preemptions", "Shards handed back because an owner drove away"),
}


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """What the fleet process exports, taken at one moment in its own thread."""

    taken_at: float  # Unix seconds
    cars_known: int
    cars_pending: int  # not yet joined (a growing fleet)
    cars_by_state: Mapping[str, int]
    published_by_channel: Mapping[str, int]
    connections: int
    connections_up: int
    reconnects: int
    refused_by_reason: Mapping[str, int]  # connections stopped for good: "login" refused, "tls" failed
    unacked_messages: int  # QoS 1 messages the broker has not acknowledged yet
    outbox_messages: int  # messages the cars said that are not handed to a connection yet
    backlogged: bool  # a socket is behind: the fleet waits instead of queueing more
    counts: Mapping[str, int] = field(default_factory=dict)  # the fleet core's event counts


def take_snapshot(fleet: Fleet, net: Net, published_by_channel: Mapping[Channel, int],
                  reconnects: int) -> FleetSnapshot:
    """The fleet's and its connections' figures now (in the fleet's thread)."""
    summary = fleet.summary()
    online = summary["online"]
    by_state = {"online": online, "parked": summary["parked"], "driving": fleet.driving,
                "busy": summary["busy"], "silent": fleet.silent}
    if summary["offering"] >= 0:  # not counted above 200,000 cars
        by_state["offering"] = summary["offering"]
    links = net.links
    refused = {"login": sum(1 for k in links if k.refusal is not None and k.tls_refusal is None),
               "tls": sum(1 for k in links if k.tls_refusal is not None)}
    return FleetSnapshot(
        taken_at=time.time(), cars_known=len(fleet.cars), cars_pending=fleet.pending_cars, cars_by_state=by_state,
        published_by_channel={c.value: n for c, n in published_by_channel.items()},
        connections=sum(1 for k in links if k.wanted),
        connections_up=sum(1 for k in links if k.connected), reconnects=reconnects, refused_by_reason=refused,
        unacked_messages=sum(k.prune_acked() for k in links), outbox_messages=len(fleet.outbox),
        backlogged=net.backlogged, counts={key: fleet.counts[key] for key in COUNTED},
    )


def _labelled(family: GaugeMetricFamily | CounterMetricFamily,
              values: Mapping[str, float]) -> GaugeMetricFamily | CounterMetricFamily:
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def snapshot_metrics(s: FleetSnapshot) -> list[Metric]:
    """Every metric the fleet process exports, from one snapshot."""
    metrics: list[Metric] = [
        GaugeMetricFamily(PREFIX + "cars_known", "Cars this process runs", value=s.cars_known),
        GaugeMetricFamily(PREFIX + "cars_pending", "Cars still to join (a growing fleet)", value=s.cars_pending),
        _labelled(GaugeMetricFamily(PREFIX + "cars", "Cars by state; parked, driving and silent part the cars, "
                                    "busy and offering are parked cars", labels=["state"]), s.cars_by_state),
        _labelled(CounterMetricFamily(PREFIX + "messages_published", "MQTT messages handed to a connection, by "
                                      "channel", labels=["channel"]), s.published_by_channel),
        GaugeMetricFamily(PREFIX + "connections", "MQTT connections this process keeps", value=s.connections),
        GaugeMetricFamily(PREFIX + "connections_up", "MQTT connections connected now", value=s.connections_up),
        CounterMetricFamily(PREFIX + "reconnects", "Connections that came back after being lost",
                            value=s.reconnects),
        _labelled(GaugeMetricFamily(PREFIX + "connections_refused", "Connections stopped for good: login refused "
                                    "or TLS failed", labels=["reason"]), s.refused_by_reason),
        GaugeMetricFamily(PREFIX + "unacked_messages", "QoS 1 messages not yet acknowledged by the broker",
                          value=s.unacked_messages),
        GaugeMetricFamily(PREFIX + "outbox_messages", "Messages not yet handed to a connection",
                          value=s.outbox_messages),
        GaugeMetricFamily(PREFIX + "backlogged", "1 while a socket is behind and the fleet waits",
                          value=int(s.backlogged)),
        GaugeMetricFamily(PREFIX + "snapshot_timestamp_seconds", "Unix time these values were taken",
                          value=s.taken_at),
    ]
    for key, (name, doc) in COUNTED.items():
        metrics.append(CounterMetricFamily(PREFIX + name, doc, value=s.counts.get(key, 0)))
    return metrics


class SnapshotCollector(Collector):
    """A prometheus_client collector rendering the latest snapshot handed to `observe`."""

    def __init__(self) -> None:
        self.latest: FleetSnapshot | None = None

    def observe(self, snapshot: FleetSnapshot) -> None:
        self.latest = snapshot

    def collect(self) -> Iterator[Metric]:
        latest = self.latest
        if latest is not None:
            yield from snapshot_metrics(latest)


class FleetMetrics:
    """The fleet's metrics: the collector, its HTTP server once served, and when the last snapshot was taken."""

    def __init__(self) -> None:
        self.collector = SnapshotCollector()
        self.endpoint: tuple[WSGIServer, threading.Thread] | None = None
        self.host = ""
        self.snapshot_at = 0.0  # time.monotonic() of the last snapshot

    @property
    def url(self) -> str | None:
        if self.endpoint is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.endpoint[0].server_port}/metrics"

    def serve(self, host: str, port: int) -> None:
        """Serve the collector alone at http://host:port/metrics (port 0: any free one); OSError if it cannot bind."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        self.endpoint, self.host = start_http_server(port, host, registry), host
        log.info("metrics at %s", self.url)

    def due(self, now: float) -> bool:
        """Whether a snapshot should be taken at `now` (monotonic seconds)."""
        return self.endpoint is not None and now - self.snapshot_at >= SNAPSHOT_EVERY_S

    def observe(self, snapshot: FleetSnapshot) -> None:
        self.snapshot_at = time.monotonic()
        self.collector.observe(snapshot)

    def close(self) -> None:
        if self.endpoint is not None:
            server, thread = self.endpoint
            self.endpoint = None
            server.shutdown()
            server.server_close()
            thread.join(5.0)
