"""`/metrics` for Prometheus: scraped from a real dispatcher and fleet during a job, checked against the summary."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.metrics import SummaryCollector
from fake_vehicles.metrics import FleetSnapshot, SnapshotCollector
from mqttlink import cancel_and_wait, client_id_of, make_client
from protocol import FleetSummary, JobState, JobSubmission, decode, encode
from tests.support.brokers import TestBroker
from tests.support.demo_loadtest import clean_env
from tests.support.samples import all_samples
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
SIM_START = "2026-11-30T10:00:00Z"  # a Monday morning: commuters have just parked at work
DASHBOARD = Path(__file__).parents[1] / "docs" / "grafana-fleetroom.json"
Sample = tuple[str, tuple[tuple[str, str], ...]]  # metric sample name, sorted labels


def expected_samples(s: FleetSummary) -> dict[Sample, float]:
    """What /metrics must say for summary `s`: one sample per figure, named by Prometheus conventions."""
    def one(name: str, value: float) -> tuple[Sample, float]:
        return (f"fleetroom_{name}", ()), float(value)

    expected = dict([
        one("cars_known", s.cars_known), one("rated_tops", s.tops_total), one("offered_tops", s.tops_offered),
        one("allocated_tops", s.tops_allocated), one("shards_completed_total", s.shards_completed),
        one("shards_running", s.shards_running), one("assignments_running", s.assignments_running),
        one("work_done_tera_ops_total", s.work_done_tera_ops), one("redone_tera_ops_total", s.redone_tera_ops),
        one("throughput_tops", s.throughput_tops), one("preemptions_total", s.preemptions),
        one("wrong_results_total", s.wrong_results_caught), one("energy_kwh_total", s.energy_kwh),
        one("messages_received_total", s.messages_received), one("messages_per_second", s.messages_per_s),
        one("ingest_backlog_messages", s.ingest_backlog), one("summary_timestamp_seconds", s.sent_at.timestamp()),
    ])
    labelled = (("cars", "state", s.cars_by_state), ("hardware_cars", "hardware", s.cars_by_hardware),
                ("hardware_rated_tops", "hardware", s.tops_by_hardware), ("jobs", "status", s.jobs_by_status),
                ("messages_rejected_total", "reason", s.rejections),
                ("earnings_gross_currency_total", "currency", {s.currency: s.earnings_gross}),
                ("energy_cost_currency_total", "currency", {s.currency: s.energy_cost}),
                ("robotaxi_gross_currency_total", "currency", {s.currency: s.robotaxi_gross}),
                ("earnings_net_currency", "currency", {s.currency: s.earnings_net}))
    for name, label, values in labelled:
        for key, value in values.items():
            expected[(f"fleetroom_{name}", ((label, key),))] = float(value)
    return expected


def parsed(text: str) -> dict[Sample, float]:
    """Every sample of a Prometheus text exposition, parsed by prometheus_client's own parser."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(url: str) -> dict[Sample, float]:
    with urllib.request.urlopen(url, timeout=5) as response:  # a 127.0.0.1 URL the process printed
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parsed(response.read().decode())


class Summaries:
    """Every FleetSummary and JobState the dispatcher publishes, as a subscriber sees them."""

    def __init__(self) -> None:
        self.by_time: dict[float, FleetSummary] = {}
        self.jobs: dict[str, JobState] = {}

    async def read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            decoded = decode(bytes(message.payload))  # type: ignore[arg-type]
            if isinstance(decoded, FleetSummary):
                self.by_time[decoded.sent_at.timestamp()] = decoded
            elif isinstance(decoded, JobState):
                self.jobs[decoded.job_id] = decoded

    @property
    def latest(self) -> FleetSummary | None:
        return self.by_time[max(self.by_time)] if self.by_time else None


async def matched_scrape(url: str, summaries: Summaries) -> tuple[dict[Sample, float], FleetSummary]:
    """A scrape and the summary received on MQTT that it was rendered from (same sent_at)."""
    for _ in range(5):
        samples = await asyncio.to_thread(scrape, url)
        sent = samples[("fleetroom_summary_timestamp_seconds", ())]
        with contextlib.suppress(AssertionError):  # QoS 0: that one summary may not come; scrape again
            await wait_until(lambda t=sent: t in summaries.by_time, 3, "the scraped summary on MQTT")
            return samples, summaries.by_time[sent]
    raise AssertionError("no scrape matched a summary received on MQTT")


def _env() -> dict[str, str]:
    return clean_env()


@contextlib.asynccontextmanager
async def process(log: Path, *argv: str) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A fleetroom command as its own process, stderr to `log`; stopped with SIGTERM (killed if it hangs).

    It is waited for in a thread: the broker runs in this loop and must serve the process's goodbye.
    """
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fleetroom", *argv], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)


async def metrics_url(log: Path, proc: subprocess.Popen[bytes]) -> str:
    """The /metrics URL a process printed at start (it asked for port 0)."""
    found: list[str] = []

    def printed() -> bool:
        assert proc.poll() is None, log.read_text()
        found[:] = re.findall(r"metrics for Prometheus at (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
        return bool(found)

    await wait_until(printed, 20, f"the metrics URL in {log.name}")
    return found[0]


@contextlib.asynccontextmanager
async def subscribed(broker: TestBroker, summaries: Summaries) -> AsyncIterator[aiomqtt.Client]:
    url = broker.url()
    async with make_client(url, client_id_of(url, "scraper")) as client:
        await client.subscribe(broker.topics.summary, qos=1)
        await client.subscribe(broker.topics.all_job_states, qos=1)
        reader = asyncio.create_task(summaries.read(client))
        try:
            yield client
        finally:
            await cancel_and_wait(reader)


def job(job_id: str) -> bytes:
    now = datetime.now(UTC)
    return encode(JobSubmission(sender="operator", sent_at=now, sim_time=now, job_id=job_id, name="metrics",
                                total_work_tera_ops=60_000.0, shards=4, min_tops_per_car=50.0, max_parallel_shards=4,
                                checkpoint_interval_s=30.0))


COUNTERS = re.compile(r"_total$")


class Run:
    """A real run: the test's subscriber, a dispatcher and a fleet as processes, both serving /metrics."""

    def __init__(self, broker: TestBroker, tmp_path: Path) -> None:
        self.broker, self.tmp_path, self.summaries = broker, tmp_path, Summaries()
        self.scrapes: list[dict[Sample, float]] = []  # the dispatcher's, each matched to its summary

    async def scrape_until_done(self, url: str, job_id: str) -> FleetSummary:
        """Scrape once per new summary until the job is done; each scrape must be its summary, exactly."""
        summaries = self.summaries
        deadline = asyncio.get_running_loop().time() + 60
        while (state := summaries.jobs.get(job_id)) is None or state.status.value != "done":
            latest = await self.check_scrape(url)
            assert asyncio.get_running_loop().time() < deadline, f"the job did not finish: {state}"
            await wait_until(lambda s=latest: max(summaries.by_time) > s.sent_at.timestamp(), 5, "a new summary")
        await wait_until(lambda: (s := summaries.latest) is not None and s.shards_completed == 4, 5,
                         "the summary to count the job's shards")
        return await self.check_scrape(url)

    async def check_scrape(self, url: str) -> FleetSummary:
        samples, summary = await matched_scrape(url, self.summaries)
        assert samples == expected_samples(summary)
        self.scrapes.append(samples)
        return summary

    async def run(self) -> tuple[FleetSummary, dict[Sample, float]]:
        """Submit a job (and a bad message) to a fleet of five; the final summary and the fleet's metrics."""
        broker, summaries, tmp_path = self.broker, self.summaries, self.tmp_path
        common = ("--broker", f"mqtt://127.0.0.1:{broker.port}", "--topic-prefix", broker.topics.prefix,
                  "--sim-start", SIM_START, "--metrics-port", "0")
        d_log, f_log = tmp_path / "dispatcher.log", tmp_path / "fleet.log"
        async with subscribed(broker, summaries) as client, \
                process(d_log, "dispatcher", *common, "--db", str(tmp_path / "l.sqlite"),
                        "--summary-interval", "0.3") as dispatcher:
            d_url = await metrics_url(d_log, dispatcher)
            # amqtt 0.12.1: nobody else subscribes until the dispatcher has (its first summary says so)
            await wait_until(lambda: summaries.latest is not None, 20, "the dispatcher's first summary")
            async with process(f_log, "vehicles", *common, "--count", "5", "--hardware-mix", "HW4=1",
                               "--seed", "3") as fleet:
                f_url = await metrics_url(f_log, fleet)
                await wait_until(lambda: (s := summaries.latest) is not None and s.tops_offered > 0, 20, "offers")
                await client.publish(broker.topics.job_submit, b"{not json", qos=1)  # counted under a reason
                await client.publish(broker.topics.job_submit, job("job-m"), qos=1)
                summary = await self.scrape_until_done(d_url, "job-m")
                return summary, await asyncio.to_thread(scrape, f_url)


async def test_scraped_metrics_are_the_fleet_summary_of_the_same_moment(
    amqtt_broker: TestBroker, tmp_path: Path
) -> None:
    run = Run(amqtt_broker, tmp_path)
    summary, fleet_samples = await run.run()
    assert any(s[("fleetroom_shards_running", ())] > 0 for s in run.scrapes), "no scrape caught a shard running"
    assert summary.shards_completed == 4 and summary.jobs_by_status["done"] == 1 and summary.earnings_gross > 0
    assert summary.rejections and summary.messages_received > 0
    for before, after in itertools.pairwise(run.scrapes):  # counters never go down
        for key, value in before.items():
            if COUNTERS.search(key[0]):
                assert after.get(key, 0.0) >= value, key
    assert fleet_samples[("fleetroom_fleet_cars_known", ())] == summary.cars_known == 5
    assert fleet_samples[("fleetroom_fleet_connections_up", ())] == 6  # five cars and the process's own
    assert fleet_samples[("fleetroom_fleet_results_total", ())] >= 4
    shards_sent = fleet_samples[("fleetroom_fleet_messages_published_total", (("channel", "shards"),))]
    assert shards_sent >= fleet_samples[("fleetroom_fleet_results_total", ())]  # results, and progress besides


def exported_names() -> set[str]:
    """Every sample name the dispatcher and the fleet export, rendered from sample values."""
    summary = next(m for m in all_samples() if isinstance(m, FleetSummary))
    summary = summary.model_copy(update={"rejections": {"bad_json": 1}})
    collector = SummaryCollector()
    collector.observe(summary)
    fleet = SnapshotCollector()
    fleet.observe(FleetSnapshot(0.0, 1, 0, {"online": 1}, {"offer": 1}, 1, 1, 0, {"login": 0}, 0, 0, False))
    names: set[str] = set()
    for one in (collector, fleet):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(one)
        names |= {name for name, _ in parsed(generate_latest(registry).decode())}
    return names


def test_the_grafana_dashboard_reads_only_metrics_that_are_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    assert len(exprs) >= 10, "a dashboard with a panel per group of figures"
    exported = exported_names()
    read = {name for expr in exprs for name in re.findall(r"\bfleetroom_[a-z_]+\b", expr)}
    assert read and read <= exported, read - exported
    for family in ("fleetroom_cars", "fleetroom_rated_tops", "fleetroom_jobs", "fleetroom_shards_completed_total",
                   "fleetroom_earnings_gross_currency_total", "fleetroom_messages_rejected_total",
                   "fleetroom_ingest_backlog_messages", "fleetroom_fleet_messages_published_total"):
        assert family in read, f"the dashboard does not show {family}"
    assert dashboard["templating"]["list"][0]["type"] == "datasource"  # any Prometheus the reader has


def test_every_metric_name_follows_prometheus_conventions() -> None:
    for name in exported_names():
        assert re.fullmatch(r"fleetroom_[a-z][a-z_]*[a-z]", name), name
        assert not name.endswith("_total") or "_total" not in name[:-6], name
    assert {"fleetroom_energy_kwh_total", "fleetroom_work_done_tera_ops_total", "fleetroom_offered_tops"} <= \
        exported_names()


def _busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize("command", [("dispatcher", "--db", "{tmp}/l.sqlite"), ("vehicles", "--count", "1")])
def test_a_metrics_port_in_use_or_out_of_range_is_one_line_and_exit_2(command: tuple[str, ...],
                                                                     tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "fleetroom", command[0], "--broker", "mqtt://127.0.0.1:9",
            *(a.format(tmp=tmp_path) for a in command[1:])]
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        done = subprocess.run([*argv, "--metrics-port", str(port)], env=_env(), capture_output=True, timeout=60,
                              text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr, done.stderr
    done = subprocess.run([*argv, "--metrics-port", "70000"], env=_env(), capture_output=True, timeout=60, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--metrics-port" in done.stderr, done.stderr
