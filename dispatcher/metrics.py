"""The dispatcher's `/metrics` for Prometheus: the latest FleetSummary, in the Prometheus text format.

Nothing is counted twice: the service hands every summary it publishes to `SummaryCollector`,
and a scrape renders that one summary. Counters come from the ledger's totals (which only grow)
and the process's own message count; gauges are the summary's current values. The collector
lives in its own registry (not prometheus_client's global one), so that two dispatchers in one
process, as in the tests, never mix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from protocol.fleet_messages import FleetSummary

log = logging.getLogger(__name__)
PREFIX = "fleetroom_"


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)


def _labelled(family: GaugeMetricFamily | CounterMetricFamily, values: Mapping[str, float],
              *fixed: str) -> GaugeMetricFamily | CounterMetricFamily:
    for key, value in sorted(values.items()):
        family.add_metric([key, *fixed], value)
    return family


def _cars(s: FleetSummary) -> list[Metric]:
    scale = f" (scaled: {s.scenario_scale})" if s.scenario_scale else ""
    return [
        _gauge("cars_known", "Cars the dispatcher has heard of" + scale, s.cars_known),
        _labelled(GaugeMetricFamily(PREFIX + "cars", "Cars by state; online counts every reachable car, the other "
                                    "states are each car's one state" + scale, labels=["state"]), s.cars_by_state),
        _labelled(GaugeMetricFamily(PREFIX + "hardware_cars", "Online cars by hardware generation" + scale,
                                    labels=["hardware"]), s.cars_by_hardware),
        _gauge("rated_tops", "Rated int8 TOPS of the cars online" + scale, s.tops_total),
        _gauge("offered_tops", "TOPS standing in offers" + scale, s.tops_offered),
        _gauge("allocated_tops", "TOPS held by running assignments" + scale, s.tops_allocated),
        _labelled(GaugeMetricFamily(PREFIX + "hardware_rated_tops", "Rated TOPS of the cars online by hardware "
                                    "generation" + scale, labels=["hardware"]), s.tops_by_hardware),
    ]


def _work(s: FleetSummary) -> list[Metric]:
    return [
        _labelled(GaugeMetricFamily(PREFIX + "jobs", "Jobs in the ledger by status", labels=["status"]),
                  s.jobs_by_status),
        _counter("shards_completed", "Shards completed (the ledger's total)", s.shards_completed),
        _gauge("shards_running", "Distinct shards with an active assignment", s.shards_running),
        _gauge("assignments_running", "Active assignments, replicas counted", s.assignments_running),
        _counter("work_done_tera_ops", "Tera-operations of accepted results (the ledger's total)",
                 s.work_done_tera_ops),
        _counter("redone_tera_ops", "Tera-operations lost to preemptions and done again", s.redone_tera_ops),
        _gauge("throughput_tops", "Tera-operations accepted per simulation second, recent window",
               s.throughput_tops),
        _counter("preemptions", "Assignments lost or handed back before they finished", s.preemptions),
        _counter("wrong_results", "Wrong results caught (spot checks and replica disagreement)",
                 s.wrong_results_caught),
    ]


def _money(s: FleetSummary) -> list[Metric]:
    """The ledger's money: compute and robotaxi gross, energy cost (compute and driving), and net."""
    unit = f"in {s.currency} (the currency label)"
    gross = CounterMetricFamily(PREFIX + "earnings_gross_currency", f"Cars' gross earnings from compute, {unit}",
                                labels=["currency"])
    gross.add_metric([s.currency], s.earnings_gross)
    robotaxi = CounterMetricFamily(PREFIX + "robotaxi_gross_currency", f"Owners' share of robotaxi fares, {unit}",
                                   labels=["currency"])
    robotaxi.add_metric([s.currency], s.robotaxi_gross)
    cost = CounterMetricFamily(PREFIX + "energy_cost_currency", f"Cost of the energy compute and robotaxi driving "
                               f"drew, {unit}", labels=["currency"])
    cost.add_metric([s.currency], s.energy_cost)
    net = GaugeMetricFamily(PREFIX + "earnings_net_currency", f"Cars' net earnings: compute + robotaxi gross - "
                            f"energy cost, {unit}", labels=["currency"])
    net.add_metric([s.currency], s.earnings_net)
    return [gross, robotaxi, cost, net, _counter("energy_kwh", "Energy the work drew, in kWh", s.energy_kwh)]


def _intake(s: FleetSummary) -> list[Metric]:
    rejected = CounterMetricFamily(PREFIX + "messages_rejected", "Messages and claims refused, by reason",
                                   labels=["reason"])
    return [
        _counter("messages_received", "MQTT messages handled since the dispatcher process started",
                 s.messages_received),
        _gauge("messages_per_second", "MQTT messages handled per wall second since the previous summary",
               s.messages_per_s),
        _labelled(rejected, s.rejections),
        _gauge("ingest_backlog_messages", "Messages waiting in the dispatcher's inbound queue", s.ingest_backlog),
        _gauge("summary_timestamp_seconds", "Unix time the FleetSummary these values come from was sent",
               s.sent_at.timestamp()),
    ]


def summary_metrics(summary: FleetSummary) -> list[Metric]:
    """Every metric the dispatcher exports, from one FleetSummary."""
    return _cars(summary) + _work(summary) + _money(summary) + _intake(summary)


class SummaryCollector(Collector):
    """A prometheus_client collector rendering the latest summary handed to `observe`."""

    def __init__(self) -> None:
        self.latest: FleetSummary | None = None  # immutable; replaced whole, so a scrape thread reads one summary

    def observe(self, summary: FleetSummary) -> None:
        self.latest = summary

    def collect(self) -> Iterator[Metric]:
        latest = self.latest
        if latest is not None:
            yield from summary_metrics(latest)


class MetricsUnavailable(RuntimeError):
    """The metrics port cannot be served (in use, or an address not of this machine); one line."""


@dataclass
class MetricsEndpoint:
    """A running `/metrics` HTTP server (prometheus_client's, in its own daemon thread)."""

    server: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.server.server_port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


def serve_metrics(collector: Collector, host: str, port: int) -> MetricsEndpoint:
    """Serve `collector` alone at http://host:port/metrics (port 0: any free one).

    Raises `MetricsUnavailable` if the address cannot be bound.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise MetricsUnavailable(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    endpoint = MetricsEndpoint(server, thread, host)
    log.info("metrics at %s", endpoint.url)
    return endpoint
