"""The stage engine: brings up the fleet, runs each stage of a scenario, measures, and judges.

Process control (the `Stack`'s supervisor) blocks, so it runs in a worker thread while the
observer keeps folding messages in the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleetroom.common import clock_flags
from fleetroom.compose.jobstream import JobStream
from fleetroom.compose.stack import DISPATCHER, Stack
from fleetroom.compose.supervisor import ChildDied, NotReady
from fleetroom.loadtest.ledger import RunLedger
from fleetroom.loadtest.memory import stack_rss_bytes
from fleetroom.loadtest.observer import Observer
from fleetroom.loadtest.progress import Progress, ProgressPrinter, progress_line
from fleetroom.loadtest.report import StageRecord, build_report, write_report
from fleetroom.loadtest.scenario import (
    BrokerRestart,
    ConnectRamp,
    DispatcherKill,
    Drain,
    FaultyCars,
    MassDeparture,
    ReconnectStorm,
    Scenario,
    Stage,
)
from fleetroom.loadtest.slo import Verdict, evaluate
from mqttlink import cancel_and_wait
from protocol import DriveAway, JobSubmission, Topics, utc_now
from protocol.clock import SimClock

log = logging.getLogger(__name__)
TICK_S = 0.2
RESUBMIT_AFTER_S = 5.0
READY_TIMEOUT_S = 60.0
RSS_EVERY_S = 1.0  # how often the whole stack's memory is sampled


def sim_start_for(scenario: Scenario, today: datetime) -> datetime:
    """The simulation origin that puts the first mass departure at `departure_hour`:00 sharp."""
    offset_s = 0.0
    for stage in scenario.stages:
        if isinstance(stage, MassDeparture):
            day = today.replace(hour=scenario.departure_hour, minute=0, second=0, microsecond=0)
            return day - timedelta(seconds=offset_s * scenario.speed)
        offset_s += stage.held_s
    return today.replace(hour=9, minute=0, second=0, microsecond=0)


def hardware_mix_flag(mix: dict[str, float]) -> str:
    return ",".join(f"{name}={share:g}" for name, share in mix.items())


@dataclass
class LoadTest:
    """One run of one scenario on one stack."""

    scenario: Scenario
    stack: Stack
    topics: Topics
    out_dir: Path
    printer: ProgressPrinter
    ledger: RunLedger = field(default_factory=RunLedger)
    records: list[StageRecord] = field(default_factory=list)
    submitting: bool = True
    aborted: str = ""

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.sim_start = sim_start_for(self.scenario, datetime.now(UTC) + timedelta(days=1))
        epoch = time.time()
        self.clock = SimClock(self.scenario.speed, self.sim_start, epoch=epoch)
        self.clock_flags = clock_flags(self.scenario.speed, self.sim_start, epoch)  # every part, restarts too
        self.jobs = JobStream(random.Random(self.scenario.jobs.seed), self.scenario.jobs.mix,
                              sender="loadtest", prefix=f"lt{random.randrange(16**6):06x}",
                              scale=self.scenario.jobs.scale)
        # the harness submits jobs and drives cars away: on a secured broker it is the operator
        self.observer = Observer(self.stack.login("operator"), self.topics, self.ledger, self.started,
                                 telemetry_sample=self.scenario.telemetry_sample)
        self._job_credit = 0.0
        self._planned_end = 0.0  # seconds after the first stage started
        self._first_stage_at = 0.0
        self._unacknowledged: dict[str, tuple[JobSubmission, float]] = {}
        self._fleet_started = False
        self._next_rss_at = 0.0

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def restart(self, name: str) -> None:
        """Start child `name` again with its command line; the shared epoch puts its clock in step."""
        sup = self.stack.supervisor
        sup.start(name, sup.children[name].argv)

    # the command lines of the parts ----------------------------------------------------------
    def fleet_args(self, count: int, seed: int, faulty_share: float, extra: list[str]) -> list[str]:
        fleet = self.scenario.fleet
        return [
            "--count", str(count), "--seed", str(seed), "--hardware-mix", hardware_mix_flag(fleet.hardware_mix),
            *self.clock_flags, "--telemetry-interval", f"{fleet.telemetry_interval_s:g}", "--mode", fleet.mode,
            "--faulty-share", f"{faulty_share:g}", *extra,
        ]

    def start_fleet(self, grow: list[str]) -> None:
        fleet = self.scenario.fleet
        for i in range(fleet.processes):
            shard = ["--shard", f"{i}/{fleet.processes}"] if fleet.processes > 1 else []
            args = self.fleet_args(fleet.count, fleet.seed, fleet.faulty_share, [*shard, *grow])
            self.stack.start_fleet(f"fleet-{i}", args)
        self._fleet_started = True

    def start_dispatcher(self) -> None:
        self.stack.start_dispatcher(
            self.out_dir / "ledger.sqlite3",
            ["--policy", self.scenario.policy, *self.clock_flags,
             "--heartbeat-timeout", f"{self.scenario.heartbeat_timeout_s:g}"],
        )

    # running --------------------------------------------------------------------------------
    async def run(self) -> tuple[dict[str, Any], list[Verdict]]:
        """Run every stage, drain, and return the report and the objectives' verdicts."""
        observer = asyncio.create_task(self.observer.run())
        try:
            await asyncio.wait_for(self.observer.connected.wait(), READY_TIMEOUT_S)
            await asyncio.to_thread(self.start_dispatcher)
            await self._wait(lambda: self.ledger.last_summary is not None, READY_TIMEOUT_S, "the dispatcher's summary")
            if not isinstance(self.scenario.stages[0], ConnectRamp):
                await asyncio.to_thread(self.start_fleet, [])
            for index, stage in enumerate(self.scenario.stages, 1):
                await self._run_stage(index, stage)
        except (ChildDied, NotReady, TimeoutError) as exc:
            self.aborted = str(exc) or type(exc).__name__  # the report still says what was seen until then
        finally:
            self.printer.finish()
            await cancel_and_wait(observer)
        return self._finish()

    def _finish(self) -> tuple[dict[str, Any], list[Verdict]]:
        meta = {
            "scenario": self.scenario.name, "description": self.scenario.description,
            "broker": self.stack.broker_kind, "fleet_processes": self.scenario.fleet.processes,
            "speed": self.scenario.speed, "sim_start": self.sim_start.isoformat(),
            "finished_at": utc_now().isoformat(), "aborted": self.aborted,
        }
        report = build_report(meta, self.ledger, self.records, self.now_s())
        verdicts = evaluate(self.scenario.slo, report)
        if self.aborted:
            verdicts.append(Verdict("aborted", f"run aborted: {self.aborted}", 0.0, 1.0, False))
        write_report(self.out_dir, report, verdicts, self.ledger, self.records)
        return report, verdicts

    async def _run_stage(self, index: int, stage: Stage) -> None:
        start = self.now_s()
        if index == 1:
            self._first_stage_at = start
        self.printer.note(f"stage {index}/{len(self.scenario.stages)}: {stage.label} at {start:.1f}s")
        note = await self._act(stage, index)
        if isinstance(stage, Drain):
            self.submitting = False
            await self._wait(lambda: not self.ledger.pending_jobs(), stage.timeout_s, "", index=index,
                             label=stage.label, required=False)
            note = f"{len(self.ledger.pending_jobs())} jobs still pending"
        else:
            # Stages keep to the plan (their actions' own time is absorbed), so that the
            # simulated clock reaches the departure hour when the plan says it does.
            self._planned_end += stage.held_s
            await self._hold(max(0.0, self._planned_end - self.now_s() + self._first_stage_at), index, stage.label)
        self.records.append(StageRecord(stage.kind, stage.label, start, self.now_s(), note))

    async def _act(self, stage: Stage, index: int) -> str:
        """Do what the stage does at its start; return a note for the report."""
        match stage:
            case ConnectRamp(grow_to=grow_to, duration_s=over_s):
                grow = ["--grow-to", str(grow_to), "--grow-over", f"{over_s:g}"] if grow_to else []
                await asyncio.to_thread(self.start_fleet, grow)
                return f"{self.scenario.fleet.count} cars" + (f", growing to {grow_to}" if grow_to else "")
            case ReconnectStorm():
                return await asyncio.to_thread(self._reconnect_storm)
            case MassDeparture(share=share):
                return self._mass_departure(share)
            case BrokerRestart() | DispatcherKill():
                return await self._outage(stage, index)
            case FaultyCars(count=count, faulty_share=share):
                args = self.fleet_args(count, self.scenario.fleet.seed + 1000, share, [])
                await asyncio.to_thread(self.stack.start_fleet, "fleet-faulty", args)
                return f"{count} more cars, {share:.0%} of them faulty"
        return ""

    def _reconnect_storm(self) -> str:
        for name in self.stack.fleets:
            self.stack.supervisor.kill(name)
        for name in self.stack.fleets:
            self.restart(name)
        return f"killed and restarted {len(self.stack.fleets)} fleet process(es): every car reconnects at once"

    def _mass_departure(self, share: float) -> str:
        cars = self.ledger.online_cars()
        leaving = random.Random(self.scenario.fleet.seed).sample(cars, round(len(cars) * share))
        now, sim_now = utc_now(), self.clock.now()
        for car in leaving:
            self.observer.send(self.topics.fleet_control,
                               DriveAway(sender="loadtest", sent_at=now, sim_time=sim_now, vehicle_id=car))
        return f"{len(leaving)} of {len(cars)} cars drive away at {sim_now:%H:%M} simulated"

    async def _outage(self, stage: BrokerRestart | DispatcherKill, index: int) -> str:
        down_s = stage.down_s
        sup = self.stack.supervisor
        if isinstance(stage, BrokerRestart):
            await asyncio.to_thread(sup.stop, "broker")
            await self._hold(down_s, index, stage.label)
            await asyncio.to_thread(self.stack.restart_broker)
            return f"broker stopped for {down_s:g}s and started again on the same port"
        await asyncio.to_thread(sup.kill, DISPATCHER)
        await self._hold(down_s, index, stage.label)
        await asyncio.to_thread(self.restart, DISPATCHER)
        return f"dispatcher killed (SIGKILL) for {down_s:g}s, restarted on the same ledger"

    async def _hold(self, seconds: float, index: int, label: str) -> None:
        await self._wait(lambda: False, seconds, "", index=index, label=label, required=False)

    async def _wait(self, condition: Callable[[], bool], timeout: float, what: str, *, index: int = 0,
                    label: str = "starting", required: bool = True) -> None:
        """Tick (submit jobs, show progress, watch children) until `condition()` or the timeout."""
        deadline = self.now_s() + timeout
        while not condition():
            if self.now_s() >= deadline:
                if required:
                    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
                return
            self._tick(index, label)
            await asyncio.sleep(TICK_S)

    def _resubmit_unacknowledged(self) -> None:
        """Send a job again (same id) when the dispatcher has not answered it, as a careful client does.

        A submission published while the dispatcher is down reaches nobody (clean sessions);
        the dispatcher treats a known job id as a resubmission and restates the job.
        """
        if not self.observer.connected.is_set():
            return
        now = self.now_s()
        for job_id, (job, sent) in list(self._unacknowledged.items()):
            if job_id in self.ledger.job_states:
                del self._unacknowledged[job_id]
            elif job_id in self.ledger.submitted and now - sent >= RESUBMIT_AFTER_S:
                self._unacknowledged[job_id] = (job, now)
                self.ledger.resubmissions += 1
                self.observer.submit(job.model_copy(update={"sent_at": utc_now()}))

    def _jobs_due(self) -> bool:
        """Whether jobs flow yet: `jobs.start_s` after the first stage began (a steady-state measure skips the join)."""
        return self.now_s() - self._first_stage_at >= self.scenario.jobs.start_s

    def _sample_memory(self) -> None:
        """Once a second: the resident memory of every process of the run, the harness included."""
        if self.now_s() >= self._next_rss_at:
            self._next_rss_at = self.now_s() + RSS_EVERY_S
            self.ledger.record_stack_rss(stack_rss_bytes(self.stack.supervisor.pids(), os.getpid()))

    def _tick(self, index: int, label: str) -> None:
        self.stack.supervisor.check()
        self._sample_memory()
        if self.submitting and self._fleet_started and self._jobs_due():
            self._job_credit += self.scenario.jobs.rate_per_s * TICK_S
            while self._job_credit >= 1.0:
                self._job_credit -= 1.0
                job = self.jobs.next(utc_now(), self.clock.now())
                self._unacknowledged[job.job_id] = (job, self.now_s())
                self.observer.submit(job)
        self._resubmit_unacknowledged()
        now = self.now_s()
        progress = Progress(index, len(self.scenario.stages), label, now, self.scenario.planned_s)
        self.printer.show(progress_line(progress, self.ledger, now), now)
