"""The measuring core: HDR latencies, the run ledger, objectives, and the written report."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

from fleetroom.compose.jobstream import JobStream
from fleetroom.loadtest.ledger import RunLedger
from fleetroom.loadtest.metrics import LatencyPoint, LatencyRecorder, RateMeter
from fleetroom.loadtest.progress import Progress, bar, progress_line
from fleetroom.loadtest.report import StageRecord, build_report, nice_ticks, render_svg, write_report
from fleetroom.loadtest.slo import evaluate
from protocol import (
    Channel,
    ConnectionStatus,
    JobState,
    JobStatus,
    Liveness,
    ShardAssignment,
    TopicInfo,
    VehicleStatus,
    decode,
    encode,
)

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
ENV = {"sent_at": T0, "sim_time": T0}


def status(car: str, state: Liveness) -> tuple[TopicInfo, VehicleStatus]:
    return TopicInfo(Channel.VEHICLE_STATUS, vehicle_id=car), VehicleStatus(sender=car, **ENV, state=state)


def job_state(job: str, status: JobStatus, **extra: object) -> tuple[TopicInfo, JobState]:
    return TopicInfo(Channel.JOB_STATE, job_id=job), JobState(sender="dispatcher", **ENV, job_id=job,
                                                              status=status, **extra)


def assignment(job: str) -> tuple[TopicInfo, ShardAssignment]:
    return TopicInfo(Channel.COMMANDS, vehicle_id="car-a"), ShardAssignment(
        sender="dispatcher", **ENV, assignment_id=f"a-{job}", vehicle_id="car-a", job_id=job, shard_id=f"{job}.s0",
        work_tera_ops=10.0, input_digest="ab" * 8, allocated_tops=100.0, checkpoint_interval_s=30.0,
        price_per_tops_hour=0.0)


def test_latency_percentiles_come_from_the_hdr_histogram() -> None:
    recorder = LatencyRecorder()
    for i in range(1, 101):
        recorder.record(i / 1000.0, at_s=i / 50)  # 1..100 ms over two seconds
    stats = recorder.stats()
    assert stats.count == 100
    assert abs(stats.p50_ms - 50) < 0.5 and abs(stats.p99_ms - 99) < 0.5 and abs(stats.max_ms - 100) < 0.5
    series = recorder.series()
    assert [p.second for p in series] == [0, 1, 2]
    assert sum(p.count for p in series) == 100
    assert series[0].max_ms < series[1].p50_ms


def test_rate_meter_averages_whole_seconds() -> None:
    meter = RateMeter(window_s=2)
    for t in (0.1, 0.5, 1.2, 1.3, 1.4, 2.5):
        meter.add(t)
    assert meter.rate(2.0) == 2.5  # 5 messages in seconds 0 and 1


def test_ledger_counts_connects_reconnects_failures() -> None:
    ledger = RunLedger()
    for car, state in [("car-a", Liveness.ONLINE), ("car-b", Liveness.ONLINE), ("car-a", Liveness.OFFLINE),
                       ("car-a", Liveness.ONLINE), ("car-a", Liveness.ONLINE)]:
        ledger.observe(*status(car, state), at_s=1.0, latency_s=0.002)
    c = ledger.counters
    assert (c.connects, c.reconnects, c.failures, c.receives) == (3, 1, 1, 5)
    assert ledger.online_cars() == ["car-a", "car-b"]


def test_a_lost_gateway_takes_its_cars_offline_and_they_reconnect() -> None:
    ledger = RunLedger()
    for car in ("car-a", "car-b"):
        ledger.observe(TopicInfo(Channel.VEHICLE_STATUS, vehicle_id=car),
                       VehicleStatus(sender=car, **ENV, state=Liveness.ONLINE, gateway="gw-1-0-1"), 1.0, None)
    will = ConnectionStatus(sender="gw-1-0-1", **ENV, role="gateway", state=Liveness.OFFLINE)
    ledger.observe(TopicInfo(Channel.CONNECTION_STATUS, client_id="gw-1-0-1"), will, 2.0, None)
    assert ledger.cars_online() == 0 and ledger.counters.failures == 1
    ledger.observe(*status("car-a", Liveness.ONLINE), at_s=3.0, latency_s=None)
    assert ledger.counters.reconnects == 1 and ledger.counters.connects == 3


def test_ledger_measures_assignment_latency_once_per_job() -> None:
    ledger = RunLedger()
    ledger.job_submitted("job-1", 1.0)
    ledger.observe(*assignment("job-1"), at_s=1.25, latency_s=None)
    ledger.observe(*assignment("job-1"), at_s=3.0, latency_s=None)
    stats = ledger.assignment_latency.stats()
    assert stats.count == 1 and abs(stats.max_ms - 250) < 1
    assert ledger.latency.stats().count == 0  # retained or untimed messages are not latency samples


def test_outcome_counts_lost_jobs() -> None:
    ledger = RunLedger()
    for job in ("j1", "j2", "j3", "j4", "j5"):
        ledger.job_submitted(job, 0.0)
    ledger.observe(*job_state("j1", JobStatus.DONE, preemptions=2, redone_tera_ops=5.0), at_s=1, latency_s=None)
    ledger.observe(*job_state("j2", JobStatus.RUNNING), at_s=1, latency_s=None)
    ledger.observe(*job_state("j3", JobStatus.FAILED), at_s=1, latency_s=None)
    ledger.observe(*job_state("j4", JobStatus.DONE, wrong_results=1), at_s=1, latency_s=None)
    outcome = ledger.outcome()
    assert (outcome.submitted, outcome.completed, outcome.unfinished, outcome.lost) == (5, 2, 1, 2)  # j3 + unseen j5
    assert (outcome.preemptions, outcome.redone_tera_ops, outcome.wrong_results_caught) == (2, 5.0, 1)
    assert ledger.pending_jobs() == ["j2", "j5"]
    assert ledger.lost_jobs() == ["j3", "j5"]


def _report(ledger: RunLedger) -> dict[str, object]:
    stages = [StageRecord("steady", "steady", 0.0, 2.0), StageRecord("broker_restart", "broker <restart>", 2.0, 4.0)]
    return build_report({"scenario": "t", "broker": "embedded", "fleet_processes": 1, "speed": 60}, ledger, stages, 4.0)


def test_objectives_decide_pass_and_fail() -> None:
    ledger = RunLedger()
    ledger.job_submitted("j1", 0.0)
    ledger.observe(*job_state("j1", JobStatus.DONE), at_s=1, latency_s=0.010)
    ledger.observe(*status("car-a", Liveness.ONLINE), at_s=1, latency_s=0.030)
    report = _report(ledger)
    verdicts = {v.key: v.passed for v in evaluate(
        {"max_jobs_lost": 0, "min_cars_seen": 2, "max_p99_latency_ms": 20, "min_jobs_completed_share": 1.0},
        report)}
    assert verdicts == {"max_jobs_lost": True, "min_cars_seen": False, "max_p99_latency_ms": False,
                        "min_jobs_completed_share": True}


def test_messages_the_observer_dropped_fail_their_objective_and_are_shown(tmp_path: Path) -> None:
    ledger = RunLedger()
    ledger.job_submitted("j1", 0.0)
    ledger.observe(*job_state("j1", JobStatus.DONE), at_s=1, latency_s=0.010)
    clean = _report(ledger)
    assert [v.passed for v in evaluate({"max_observer_dropped": 0}, clean)] == [True]
    for _ in range(3):
        ledger.dropped()  # what the observer's MQTT link calls when its queue is full
    report = _report(ledger)
    [verdict] = evaluate({"max_observer_dropped": 0}, report)
    assert not verdict.passed and verdict.measured == 3.0
    markdown = write_report(tmp_path, report, [verdict], ledger, [])[1].read_text()
    assert "**dropped by the observer 3**" in markdown


def test_report_files_are_written_and_the_chart_is_valid_svg(tmp_path: Path) -> None:
    ledger = RunLedger()
    for i in range(50):
        ledger.observe(*status(f"car-{i % 5}", Liveness.ONLINE), at_s=i / 12, latency_s=0.001 * (i + 1))
    report = _report(ledger)
    verdicts = evaluate({"max_jobs_lost": 0}, report)
    paths = write_report(tmp_path, report, verdicts, ledger, [StageRecord("steady", "a & b", 0, 4)])
    data = json.loads(paths[0].read_text())
    assert data["passed"] is True and data["latency"]["count"] == 50 and data["fleet"]["cars_seen"] == 5
    assert len(data["latency_series"]) == 5
    markdown = paths[1].read_text()
    assert "| end to end" in markdown and "PASS" in markdown and "![latency over time](latency.svg)" in markdown
    root = ET.fromstring(paths[2].read_text())
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2


def test_svg_without_samples_is_still_a_chart() -> None:
    ET.fromstring(render_svg([], []))


def test_progress_line_has_the_emqtt_bench_counters() -> None:
    ledger = RunLedger()
    ledger.observe(*status("car-a", Liveness.ONLINE), at_s=0.5, latency_s=0.001)
    line = progress_line(Progress(2, 4, "steady", 5.0, 10.0), ledger, 1.5)
    for word in ("conn 1", "pub 0", "recv 1", "fail 0", "reconn 0", "2/4 steady"):
        assert word in line
    assert bar(0.5, 10) == "[#####-----]"
    assert bar(2.0, 4) == "[####]"


def test_job_stream_is_valid_realistic_and_replayable() -> None:
    def draw(seed: int) -> list[bytes]:
        stream = JobStream(random.Random(seed), {"inference": 0.5, "training": 0.3, "rendering": 0.2},
                           sender="loadtest", prefix="lt")
        return [encode(stream.next(T0, T0)) for _ in range(60)]

    jobs = [decode(payload) for payload in draw(3)]
    assert draw(3) == draw(3)
    assert {j.job_kind.value for j in jobs} == {"inference", "training", "rendering"}  # type: ignore[union-attr]
    assert len({j.job_id for j in jobs}) == 60  # type: ignore[union-attr]


def test_latency_chart_has_axis_ticks_and_draws_gaps_as_gaps() -> None:
    series = [LatencyPoint(s, 10, 5.0 + s, 20.0 + s, 30.0) for s in (0, 1, 2, 6, 7, 12)]
    root = ET.fromstring(render_svg(series, [StageRecord("steady", "steady", 0, 13)]))
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 6  # p50 and p99, each cut in three runs: 0-2, 6-7, 12
    assert [len(p.get("points", "").split()) for p in lines if p.get("class") == "p50"] == [3, 2, 1]
    ticks = root.findall(f"{ns}line")
    assert sum(t.get("class") == "ytick" for t in ticks) >= 3 and sum(t.get("class") == "xtick" for t in ticks) >= 3
    labels = {t.text for t in root.findall(f"{ns}text")}
    assert {"0", "10", "20", "30"} <= labels  # round values on the latency axis (peak p99 32 ms)
    assert "gaps: seconds with no message" in " ".join(str(t) for t in labels)


def test_nice_ticks_are_round() -> None:
    assert nice_ticks(32.0) == [0, 10, 20, 30]
    assert nice_ticks(13.0, 8) == [0, 2, 4, 6, 8, 10, 12]
    assert nice_ticks(0.0) == [0.0]


def test_the_report_states_the_fleet_in_fractional_fugakus(tmp_path: Path) -> None:
    ledger = RunLedger()
    ledger.observe(*status("car-a", Liveness.ONLINE), at_s=0.5, latency_s=0.001)
    report = _report(ledger)
    report["fleet"]["tops_total_at_end"] = 100 * 5_000.0
    markdown = write_report(tmp_path, report, [], ledger, [])[1].read_text()
    assert "Compute online at the end: 500.0 kTOPS = 1.13 Fugakus, 0.41 Frontier, 0.18 El Capitan" in markdown
