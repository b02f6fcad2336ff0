"""The whole thing in one command: broker, dispatcher, a growing fleet, a job stream, control room.

Starts, each as its own process: the embedded broker (unless --broker names one), the
dispatcher, an emulated fleet of --cars cars that grows to --grow-to (new cars' hardware
moving from HW3/HW4 towards HW5/HW6), and a driver that submits realistic AI jobs (inference
batches, training shards, rendering). The control room runs in the foreground; quitting it
stops every process. Logs go to the run directory (.fleetroom/runs/demo-TIME).

--headless --duration S runs without the control room and prints the dispatcher's summary
(for scripts and CI). With --broker URL of a broker that checks fleet credentials, give the
fleet secret (--secret-file or $FLEETROOM_SECRET): every part logs in under its own role with a
password derived from it (dispatcher, gw-SEED-0-1, operator for the driver and the control room,
observer for the headless summary). --scenario essay runs the essay's fleet: on Mosquitto (started
here when installed, with the fleetroom plugin and a fresh secret) 1,000,000 real HW5 cars in gateway
mode over a few fleet processes, counted one for one; on the embedded broker (`--broker embedded`,
or no mosquitto) 2,000 cars each standing for 500, labelled so. The headless summary adds the
essay's arithmetic for the whole million.

--web serves the control room to browsers instead of drawing it here (see `fleetroom tui --web`):
each visitor gets a control room of its own, logged in as operator; Ctrl-C stops the server, every
visitor's control room and every process of the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from broker.mosquitto_config import PluginBuildError
from fake_vehicles.catalogue import MixError, normalise_mix, parse_hardware_mix
from fleetroom.commands.tui import add_web_arguments, check_web_arguments, serve_web
from fleetroom.common import (
    CARS,
    MAX_CARS,
    MAX_WALL_S,
    SEED,
    SPEED,
    WALL_S,
    CliError,
    add_tls_arguments,
    clock_flags,
    finite,
    read_secret,
    setup_logging,
    url_from_flag,
    whole,
)
from fleetroom.compose.driver import EARLY_MIX
from fleetroom.compose.essay import (
    EMBEDDED,
    MAX_ESSAY_JOB_RATE,
    DemoBroker,
    choose_broker,
    essay_emulated,
    essay_telemetry_s,
    fleet_processes,
    shard_flags,
)
from fleetroom.compose.jobstream import ESSAY_MIX, mean_car_seconds
from fleetroom.compose.stack import MOSQUITTO, Stack
from fleetroom.compose.summary import ESSAY_CARS, ESSAY_EMULATED, format_summary
from fleetroom.compose.supervisor import ChildDied, NotReady, Supervisor
from fleetroom.loadtest.ledger import RunLedger
from fleetroom.loadtest.observer import Observer
from mqttlink import BrokerUnreachable, BrokerUrl, cancel_and_wait, check_broker
from protocol import HardwareGeneration, TopicError, Topics
from protocol.identity import SECRET_ENV
from protocol.vehicle_messages import HARDWARE_TOPS

log = logging.getLogger(__name__)
MAX_JOB_RATE = 1e4
OBSERVER_CONNECT_S = 30.0
HEADLESS_TELEMETRY_SAMPLE = 1000  # cars whose telemetry the headless reader of a big fleet takes
FILL_SHARE = 0.9  # of the parked cars the essay's job stream aims to keep busy
PARKED_SHARE = 0.75  # model: about the share of cars parked and offering at 10:00 (the demo's start)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", metavar="URL|mosquitto|embedded",
                        help="use this running broker, or start mosquitto or the embedded broker (default: mosquitto "
                        "for --scenario essay when it is installed, else embedded)")
    add_tls_arguments(parser)
    parser.add_argument("--secret-file", type=Path,
                        help=f"fleet secret every part derives its password from (default: ${SECRET_ENV}, "
                        "else .fleetroom/secret if it exists; none means anonymous)")
    parser.add_argument("--topic-prefix", default="fleetroom", help="topic prefix (default: %(default)s)")
    parser.add_argument("--headless", action="store_true", help="no control room; print a summary at the end")
    parser.add_argument("--duration", type=finite(0, MAX_WALL_S), default=0.0, metavar="S",
                        help="stop after S wall seconds (default: until quit or Ctrl-C)")
    parser.add_argument("--scenario", choices=("grow", "essay"), default="grow",
                        help="grow: a fleet growing from --cars to --grow-to; essay: a million HW5 cars")
    parser.add_argument("--emulate", type=whole(1, ESSAY_CARS), default=None, metavar="N",
                        help="with --scenario essay: cars really emulated, each standing for 1,000,000 / N cars "
                        f"in the dispatcher's summary, which says so (default: 1000000 on mosquitto, every car; "
                        f"{ESSAY_EMULATED} on the embedded broker)")
    parser.add_argument("--fleet-processes", type=whole(1, 16), default=None, metavar="N",
                        help="fleet processes the cars are split over (default: 2 for a real million, else 1)")
    parser.add_argument("--cars", type=CARS, default=20, help="cars at the start (default: %(default)s)")
    parser.add_argument("--grow-to", type=whole(0, MAX_CARS), default=2000,
                        help="cars at the end of the growth (default: %(default)s)")
    parser.add_argument("--grow-over", type=WALL_S, default=120.0, metavar="S",
                        help="wall seconds the growth takes (default: %(default)s)")
    parser.add_argument("--speed", type=SPEED, default=60.0, help="simulated seconds per wall second (default: 60)")
    parser.add_argument("--job-rate", type=finite(0, MAX_JOB_RATE), default=None,
                        help="jobs submitted per wall second (default: 0.5; with --scenario essay, enough to keep "
                        "about 90%% of the parked cars busy)")
    parser.add_argument("--hardware-mix", type=_hardware_mix, default=None, metavar="MIX",
                        help="the fleet's hardware, as `fleetroom vehicles` takes it, e.g. HW6=1 "
                        "(default: HW5=1 for the essay; HW3/HW4 moving to HW5/HW6 while growing)")
    parser.add_argument("--faulty-share", type=finite(0, 1), default=0.0, metavar="F",
                        help="share of the fleet's cars that return wrong results or vanish mid-shard, as "
                        "`fleetroom vehicles` takes it; the header's and summary's fault counters show what "
                        "the dispatcher caught (default: 0)")
    parser.add_argument("--seed", type=SEED, default=1, help="random seed of the fleet and the jobs")
    parser.add_argument("--run-dir", type=Path, help="where the processes' logs go")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    add_web_arguments(parser)


def _hardware_mix(text: str) -> dict[HardwareGeneration, float]:
    """A `--hardware-mix` value, checked as the fleet checks it; a bad one is one line."""
    try:
        return normalise_mix(parse_hardware_mix(text))
    except MixError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _mix_text(mix: dict[HardwareGeneration, float]) -> str:
    return ",".join(f"{hw.value}={share:g}" for hw, share in mix.items())


def essay_mix(args: argparse.Namespace) -> dict[HardwareGeneration, float]:
    """The essay fleet's hardware: HW5 as the essay states it, unless --hardware-mix says otherwise."""
    return args.hardware_mix or {HardwareGeneration.HW5: 1.0}


def essay_job_load(args: argparse.Namespace) -> tuple[float, float]:
    """(jobs per wall second, job scale) that keep about FILL_SHARE of the essay's parked cars busy.

    Jobs are scaled by the mix's mean TOPS over HW5's, so a shard takes as long on HW6 as on HW5
    (bigger batches) and the job rate, which sets the message load, stays the same."""
    mean_tops = sum(HARDWARE_TOPS[hw] * share for hw, share in essay_mix(args).items())
    scale = mean_tops / HARDWARE_TOPS[HardwareGeneration.HW5]
    wall_s_per_job = mean_car_seconds(ESSAY_MIX, mean_tops) * scale / args.speed
    return min(MAX_ESSAY_JOB_RATE, FILL_SHARE * PARKED_SHARE * emulated(args) / wall_s_per_job), scale


def demo_broker(args: argparse.Namespace) -> DemoBroker:
    """The broker the flags ask for, or the scenario's default on this machine."""
    return choose_broker(args.broker, args.scenario, MOSQUITTO is not None)


def emulated(args: argparse.Namespace) -> int:
    """Cars the essay demo really emulates on the broker it will use."""
    return essay_emulated(args.emulate, demo_broker(args).kind)


def _check(args: argparse.Namespace) -> tuple[Topics, BrokerUrl | None]:
    try:
        topics = Topics(args.topic_prefix)
    except TopicError as exc:
        raise CliError(str(exc)) from None
    url = url_from_flag(demo_broker(args).url_text, args)
    check_web_arguments(args)
    if args.headless and args.web:
        raise CliError("--web serves the control room; --headless has none: give one of them")
    if args.headless and args.duration <= 0:
        raise CliError("--headless needs --duration S")
    if args.scenario == "essay" and ESSAY_CARS % emulated(args) != 0:
        raise CliError(f"--emulate must divide {ESSAY_CARS:,} (e.g. 2000, 10000, 1000000)")
    return topics, url


def _fleet_flags(args: argparse.Namespace, clock: list[str]) -> list[str]:
    common = ["--seed", str(args.seed), *clock, "--mode", "gateway", "--faulty-share", f"{args.faulty_share:g}"]
    if args.scenario == "essay":
        mix, cars = _mix_text(essay_mix(args)), emulated(args)
        telemetry = f"{essay_telemetry_s(cars, args.speed):g}"
        return ["--count", str(cars), "--hardware-mix", mix, "--telemetry-interval", telemetry, *common]
    mix = _mix_text(args.hardware_mix) if args.hardware_mix else ",".join(f"{k}={v:g}" for k, v in EARLY_MIX.items())
    return ["--count", str(args.cars), "--hardware-mix", mix, "--telemetry-interval", "30", *common]


def _driver_flags(args: argparse.Namespace, stack: Stack, clock: list[str]) -> list[str]:
    grow_to = 0 if args.scenario == "essay" else args.grow_to
    rate, scale, job_mix = 0.5, 1.0, "light"
    if args.scenario == "essay":
        (rate, scale), job_mix = essay_job_load(args), "essay"
    rate = rate if args.job_rate is None else args.job_rate
    hardware = ["--hardware-mix", _mix_text(args.hardware_mix)] if args.hardware_mix and grow_to else []
    return [
        sys.executable, "-m", "fleetroom.compose.driver", *stack.broker_flags(),
        *clock, "--seed", str(args.seed), "--job-rate", f"{rate:g}", "--start-cars", str(args.cars),
        "--grow-to", str(grow_to), "--grow-over", f"{args.grow_over:g}", "--job-mix", job_mix,
        "--job-scale", f"{scale:g}", *hardware,
    ]


def start_broker(stack: Stack, broker: DemoBroker, url: BrokerUrl | None, secret: bytes | None) -> None:
    """Mosquitto or the embedded broker as a child process, or the external one named by --broker.

    Mosquitto checks fleet logins with the fleetroom plugin, under the given secret or a fresh one;
    where the plugin cannot be built, it runs anonymous, as the embedded broker does, and says so."""
    if url is not None:
        stack.use_secret(secret)
        stack.use_external(url)
    elif broker.kind == EMBEDDED:
        stack.use_secret(secret)
        stack.start_embedded()
    else:
        try:
            stack.start_mosquitto(secret=secret or secrets.token_urlsafe(32).encode())
        except PluginBuildError as exc:
            print(f"fleetroom demo: mosquitto runs without logins: {exc}", file=sys.stderr)
            stack.start_mosquitto()


def start_parts(args: argparse.Namespace, stack: Stack) -> None:
    """Dispatcher, fleet and job driver, each its own process."""
    sim_start = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)  # cars parked at work
    clock = clock_flags(args.speed, sim_start, time.time())  # one clock for every part
    stand_for = ESSAY_CARS // emulated(args) if args.scenario == "essay" else 1
    scale = ["--cars-per-emulated-car", str(stand_for)] if stand_for > 1 else []  # a real million: no label
    stack.start_dispatcher(stack.run_dir / "ledger.sqlite3", [*clock, "--summary-interval", "1", *scale])
    cars = emulated(args) if args.scenario == "essay" else args.cars
    processes = fleet_processes(args.fleet_processes, cars)
    for i in range(processes):
        stack.start_fleet("fleet" if processes == 1 else f"fleet-{i}", [*_fleet_flags(args, clock),
                                                                         *shard_flags(i, processes)])
    stack.supervisor.start("driver", _driver_flags(args, stack, clock))


def telemetry_sample(args: argparse.Namespace) -> int:
    """Cars whose telemetry the headless summary's reader takes: all of them, but only a sample of a big fleet."""
    cars = emulated(args) if args.scenario == "essay" else args.grow_to
    return HEADLESS_TELEMETRY_SAMPLE if cars > HEADLESS_TELEMETRY_SAMPLE * 10 else 0


def _title(args: argparse.Namespace) -> str:
    if args.scenario != "essay":
        return "fleetroom demo"
    cars = emulated(args)
    return f"fleetroom demo: the essay's {cars:,} cars" if cars == ESSAY_CARS else "fleetroom demo: the essay's scale"


async def _headless(args: argparse.Namespace, stack: Stack, topics: Topics) -> tuple[RunLedger, float]:
    """Start the parts with an observer already listening; watch for --duration; return what it saw."""
    ledger = RunLedger()
    started = time.monotonic()
    observer = Observer(stack.login("observer"), topics, ledger, started, telemetry_sample=telemetry_sample(args))
    task = asyncio.create_task(observer.run())
    try:
        await _connected(observer, task)
        await asyncio.to_thread(start_parts, args, stack)
        while time.monotonic() - started < args.duration:
            stack.supervisor.check()
            if task.done():
                task.result()
            await asyncio.sleep(0.2)
    finally:
        await cancel_and_wait(task)
    return ledger, time.monotonic() - started


async def _connected(observer: Observer, task: asyncio.Task[None]) -> None:
    """Wait for the observer's first connection; its failure (a refused login) is raised as it is."""
    connected = asyncio.create_task(observer.connected.wait())
    try:
        await asyncio.wait({task, connected}, timeout=OBSERVER_CONNECT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(connected)
    if task.done():
        task.result()
    if not observer.connected.is_set():
        raise NotReady(f"the demo's observer did not connect to {observer.url} within {OBSERVER_CONNECT_S:.0f}s")


def _control_room(args: argparse.Namespace, stack: Stack, topics: Topics) -> None:
    """The control room in the foreground; a watchdog thread reports a child that dies."""
    from tui.app import FleetroomApp

    start_parts(args, stack)
    app = FleetroomApp(stack.login("operator"), topics, title=_title(args))
    done = threading.Event()

    def watchdog() -> None:
        started = time.monotonic()
        while not done.wait(1.0):
            if args.duration > 0 and time.monotonic() - started >= args.duration:
                app.call_from_thread(app.exit)
                return
            try:
                stack.supervisor.check()
            except ChildDied as exc:
                log.error("%s", exc)
                app.call_from_thread(app.notify, f"{exc}", title="a demo process died", severity="error")
                return

    thread = threading.Thread(target=watchdog, name="demo-watchdog", daemon=True)
    thread.start()
    try:
        app.run()
    finally:
        done.set()


def _web_control_room(args: argparse.Namespace, stack: Stack, topics: Topics) -> None:
    """The control room served to browsers until Ctrl-C or --duration; a child that dies is reported once."""
    start_parts(args, stack)
    started, duration_s = time.monotonic(), float(args.duration)
    reported: list[ChildDied] = []

    def tick() -> bool:
        if not reported:
            try:
                stack.supervisor.check()
            except ChildDied as exc:
                reported.append(exc)
                log.error("%s", exc)
                print(f"fleetroom demo: a demo process died: {exc}", file=sys.stderr)
        return duration_s <= 0 or time.monotonic() - started < duration_s

    serve_web(stack.login("operator"), topics, read_only=False, args=args, log_dir=stack.run_dir,
              title=_title(args), tick=tick)


def _check_login(stack: Stack, username: str) -> None:
    """Log in once as the demo's own reader would, before starting anything: a refusal is one line."""
    try:
        asyncio.run(check_broker(stack.login(username)))
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the supervisor, which stops every child


def run(args: argparse.Namespace) -> int:
    topics, url = _check(args)
    run_dir = args.run_dir or Path(".fleetroom/runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        setup_logging(max(args.verbose, 1), run_dir / "demo.log")
        supervisor = Supervisor(run_dir)
    except OSError as exc:
        raise CliError(f"cannot use --run-dir {run_dir}: {exc.strerror or exc}") from None
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGHUP, _stop_on_sigterm)
    with supervisor:
        stack = Stack(supervisor, topics.prefix)
        try:
            start_broker(stack, demo_broker(args), url, read_secret(args.secret_file))
            _check_login(stack, "observer" if args.headless else "operator")
            if args.headless:
                try:
                    ledger, elapsed = asyncio.run(_headless(args, stack, topics))
                except BrokerUnreachable as exc:
                    raise CliError(str(exc)) from None
                essay = (emulated(args), essay_mix(args)) if args.scenario == "essay" else None
                print(format_summary(ledger.last_summary, ledger.counters.by_kind, elapsed, essay=essay,
                                     telemetry_sample=telemetry_sample(args)))
            elif args.web:
                _web_control_room(args, stack, topics)
            else:
                _control_room(args, stack, topics)
        except (ChildDied, NotReady) as exc:
            print(f"fleetroom demo: stopped: {exc}", file=sys.stderr)
            return 1
    print(f"fleetroom demo: every process stopped; logs in {supervisor.run_dir}", file=sys.stderr)
    return 0
