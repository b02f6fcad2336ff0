"""The essay demo with a million real cars: on Mosquitto every car is emulated and counted one for
one, split over fleet processes; on the embedded broker a smaller fleet stands for it, labelled."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetroom.cli import build_parser
from fleetroom.commands.demo import _title, start_parts, telemetry_sample
from fleetroom.compose.essay import choose_broker, essay_fleet_processes
from fleetroom.compose.summary import format_summary
from tests.support.brokers import require_mosquitto
from tests.support.demo_loadtest import fleetroom, wait_gone


def demo_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *argv])


@dataclass
class RecordingSupervisor:
    started: dict[str, list[str]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str]) -> None:
        self.started[name] = argv


@dataclass
class RecordingStack:
    """What `start_parts` asks of a stack, written down instead of started."""

    run_dir: Path
    supervisor: RecordingSupervisor = field(default_factory=RecordingSupervisor)
    dispatcher: list[str] = field(default_factory=list)
    fleets: dict[str, list[str]] = field(default_factory=dict)

    def broker_flags(self) -> list[str]:
        return []

    def start_dispatcher(self, db: Path, extra: list[str]) -> None:
        self.dispatcher = extra

    def start_fleet(self, name: str, extra: list[str]) -> None:
        self.fleets[name] = extra


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_the_essay_defaults_to_mosquitto_when_it_is_installed() -> None:
    assert choose_broker(None, "essay", True).kind == "mosquitto"
    assert choose_broker(None, "essay", False).kind == "embedded"
    assert choose_broker(None, "grow", True).kind == "embedded"
    assert choose_broker("embedded", "essay", True).kind == "embedded"
    external = choose_broker("mqtt://127.0.0.1:1883", "essay", True)
    assert (external.kind, external.url_text) == ("external", "mqtt://127.0.0.1:1883")


def test_on_mosquitto_every_one_of_the_million_cars_is_emulated(tmp_path: Path) -> None:
    args = demo_args("--scenario", "essay", "--broker", "mosquitto")
    stack = RecordingStack(tmp_path)
    start_parts(args, stack)  # type: ignore[arg-type]
    assert "--cars-per-emulated-car" not in stack.dispatcher  # one for one: no scale label anywhere
    processes = essay_fleet_processes()
    assert list(stack.fleets) == ([f"fleet-{i}" for i in range(processes)] if processes > 1 else ["fleet"])
    for i, argv in enumerate(stack.fleets.values()):
        assert flag(argv, "--count") == "1000000" and flag(argv, "--mode") == "gateway"
        assert flag(argv, "--shard") == (f"{i}/{processes}" if processes > 1 else None)
        assert flag(argv, "--hardware-mix") == "HW5=1"
        assert float(flag(argv, "--telemetry-interval") or 0) == 6000  # 10,000 telemetry messages a second at 60x
    assert _title(args) == "fleetroom demo: the essay's 1,000,000 cars"


def test_the_million_gets_half_the_cores_in_fleet_processes_and_the_rest_is_the_control_planes() -> None:
    assert [essay_fleet_processes(cores) for cores in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]
    assert essay_fleet_processes() >= 1


def test_on_the_embedded_broker_a_labelled_smaller_fleet_stands_for_the_million(tmp_path: Path) -> None:
    args = demo_args("--scenario", "essay", "--broker", "embedded")
    stack = RecordingStack(tmp_path)
    start_parts(args, stack)  # type: ignore[arg-type]
    assert flag(stack.dispatcher, "--cars-per-emulated-car") == "500"
    assert list(stack.fleets) == ["fleet"] and flag(stack.fleets["fleet"], "--count") == "2000"
    assert _title(args) == "fleetroom demo: the essay's scale"


@pytest.mark.slow
def test_the_essay_runs_on_a_mosquitto_that_checks_every_login(tmp_path: Path) -> None:
    require_mosquitto()
    run_dir = tmp_path / "run"
    result = fleetroom("demo", "--scenario", "essay", "--broker", "mosquitto", "--emulate", "4000",
                       "--fleet-processes", "2", "--headless", "--duration", "12", "--run-dir", str(run_dir),
                       "--topic-prefix", "tessay", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    known = re.search(r"cars: ([\d,]+) known \(each emulated car stands for 250 cars", result.stdout)
    assert known and int(known.group(1).replace(",", "")) > 0, result.stdout
    assert "4,000 cars emulated, each standing for 250" in result.stdout
    conf = (run_dir / "mosquitto" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "fleetroom_auth.so" in conf and "max_queued_messages" in conf
    for name in ("fleet-0", "fleet-1"):  # each gateway logged in under its own name
        assert f"gw-1-{name[-1]}-2" in (run_dir / f"{name}.log").read_text()
    assert wait_gone(run_dir) == []


def test_the_headless_reader_samples_the_telemetry_of_a_million_and_says_so() -> None:
    assert telemetry_sample(demo_args("--scenario", "essay", "--broker", "mosquitto")) == 1000
    assert telemetry_sample(demo_args("--scenario", "essay", "--broker", "embedded")) == 0  # 2,000 cars: all
    assert telemetry_sample(demo_args()) == 0
    text = format_summary(None, {"telemetry": 42}, 10, telemetry_sample=1000)
    assert "42 telemetry messages (of 1,000 cars sampled)" in text
