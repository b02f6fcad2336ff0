"""Run an emulated fleet of parked electric cars that offer compute, run shards and drive away.

Cars live a simulated day (home, commute, work, errands, night) at --speed times wall time,
publish status, telemetry and compute offers, and run the shards the dispatcher assigns.
Connection modes: per-car (one MQTT connection and Last Will per car; the default up to 200
cars) and gateway (many cars over one connection whose Last Will is a gateway status; the
default above 200 cars). Several processes share one fleet with --shard i/n. With
--metrics-port it serves its cars, messages and connections at /metrics for Prometheus.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from fake_vehicles.catalogue import MixError, parse_hardware_mix
from fake_vehicles.faults import FaultConfig, FaultSpecError, parse_faults
from fake_vehicles.fleet import Fleet, FleetConfig
from fake_vehicles.fleet_telemetry import FleetTelemetryEncoder
from fake_vehicles.ids import ShardSpecError, gateway_id, owned_indices, parse_shard, vehicle_id
from fake_vehicles.messages import Encoder
from fake_vehicles.runner import Runner, RunSettings, StartupError
from fleetroom.common import (
    CARS,
    MAX_WALL_S,
    SEED,
    SIM_EPOCH_HELP,
    SPEED,
    WALL_S,
    CliError,
    add_broker_arguments,
    broker_for,
    finite,
    login_as,
    read_secret,
    setup_logging,
    sim_epoch,
    topics_from,
)
from fleetroom.metrics_flags import add_metrics_arguments
from mqttlink import BrokerUrl
from protocol.base import HardwareGeneration
from protocol.clock import SimClock
from protocol.fleet_telemetry import check_base, default_base
from protocol.topics import TopicError, Topics

PER_CAR_MAX_DEFAULT = 200
SIM_START_YEARS = (1970, 2999)
MAX_TELEMETRY_INTERVAL_S = 365 * 86400.0
TELEMETRY_INTERVAL_S = finite(0, MAX_TELEMETRY_INTERVAL_S, above=True)
TELEMETRY_FORMATS = ("fleetroom", "fleet-telemetry")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument("--count", type=CARS, required=True, metavar="N",
                       help="cars in the whole fleet (with --shard, this process runs its share)")
    fleet.add_argument("--seed", type=SEED, default=1, help="fleet seed: same seed, same cars (default: %(default)s)")
    fleet.add_argument("--hardware-mix", default="HW3=0.1,HW4=0.5,HW5=0.3,HW6=0.1", metavar="MIX",
                       help="shares of hardware generations (default: %(default)s)")
    fleet.add_argument("--speed", type=SPEED, default=60.0,
                       help="simulated seconds per wall second (default: %(default)s)")
    fleet.add_argument("--sim-start", metavar="ISO8601",
                       help="simulation start; its UTC offset is the local time owners live by, none "
                            "means UTC (default: now, at UTC-08:00)")
    fleet.add_argument("--sim-epoch", type=sim_epoch, metavar="UNIX_SECONDS", help=SIM_EPOCH_HELP)
    fleet.add_argument("--grow-to", type=CARS, metavar="M", help="grow the fleet to M cars ...")
    fleet.add_argument("--grow-over", type=finite(0, MAX_WALL_S), default=60.0, metavar="WALL_SECONDS",
                       help="... over this many wall seconds (default: %(default)s)")
    fleet.add_argument("--telemetry-interval", type=TELEMETRY_INTERVAL_S, default=60.0, metavar="SIM_SECONDS",
                       help="telemetry period per car in simulated seconds (default: %(default)s)")
    fleet.add_argument("--shard", default="0/1", metavar="i/n",
                       help="run the i-th of n disjoint parts of the fleet (default: %(default)s)")
    fleet.add_argument("--mode", choices=("per-car", "gateway"),
                       help=f"per-car: one connection per car (default for up to {PER_CAR_MAX_DEFAULT} cars); "
                            f"gateway: one connection for all (default above {PER_CAR_MAX_DEFAULT})")
    fleet.add_argument("--faulty-share", type=finite(0, 1), default=0.0, metavar="F",
                       help="share of cars that return wrong results or vanish mid-shard (default: 0)")
    fleet.add_argument("--inject-faults", action="append", default=[], metavar="NAME[=P],...",
                       help="fleet-telemetry faults: duplicate-connectivity, missing-connectivity, "
                            "dropped-signals, silent (probability P, default 0.01)")
    fleet.add_argument("--telemetry-format", choices=TELEMETRY_FORMATS, default=TELEMETRY_FORMATS[0],
                       help="fleetroom: the project's telemetry only; fleet-telemetry: also Tesla's open "
                            "fleet-telemetry MQTT records, <base>/<car>/v/<Field> and <base>/<car>/connectivity "
                            "(default: %(default)s)")
    fleet.add_argument("--telemetry-base", metavar="TOPIC",
                       help="topic base of the fleet-telemetry records (default: <topic prefix>/fleet-telemetry, "
                            "the one a secured broker allows)")
    fleet.add_argument("--duration", type=WALL_S, metavar="WALL_SECONDS", help="stop after this long")
    fleet.add_argument("--write-users", type=Path, metavar="FILE",
                       help="write the MQTT user names this fleet will use, one per line, and exit "
                            "(for `fleetroom broker --write-mosquitto-config --users-file`)")
    add_metrics_arguments(fleet, "the fleet process")


def _sim_start(text: str | None) -> datetime:
    if text is None:
        from datetime import timedelta, timezone

        return datetime.now(UTC).replace(microsecond=0).astimezone(timezone(timedelta(hours=-8)))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"bad --sim-start {text!r}: expected ISO 8601, e.g. 2026-11-30T09:00-08:00") from None
    if not SIM_START_YEARS[0] <= moment.year <= SIM_START_YEARS[1]:
        raise CliError(f"bad --sim-start {text!r}: the year must be within {SIM_START_YEARS[0]}..{SIM_START_YEARS[1]}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check(args: argparse.Namespace) -> None:
    """What the flags' types cannot check alone: one flag against another, and --sim-start."""
    if args.grow_to is not None and args.grow_to < args.count:
        raise CliError("--grow-to must be at least --count")
    _sim_start(args.sim_start)  # a bad --sim-start is reported before anything connects
    if args.telemetry_base is not None:
        if args.telemetry_format != "fleet-telemetry":
            raise CliError("--telemetry-base needs --telemetry-format fleet-telemetry")
        try:
            check_base(args.telemetry_base)
        except TopicError as exc:
            raise CliError(f"bad --telemetry-base {args.telemetry_base!r}: {exc}") from None
        root = topics_from(args).root
        if args.telemetry_base == root or args.telemetry_base.startswith(root + "/"):
            raise CliError(f"bad --telemetry-base {args.telemetry_base!r}: under the versioned root {root}, where "
                           "the dispatcher would reject every record as not in its topic map; put it beside it")


def _fleet_telemetry(args: argparse.Namespace, topics: Topics) -> FleetTelemetryEncoder | None:
    """The fleet-telemetry encoder the flags ask for, or None for the project's telemetry only."""
    if args.telemetry_format != "fleet-telemetry":
        return None
    return FleetTelemetryEncoder(args.telemetry_base or default_base(topics), args.seed)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    _check(args)
    try:
        mix = parse_hardware_mix(args.hardware_mix)
        faults = parse_faults(args.inject_faults)
        shard_index, shard_count = parse_shard(args.shard)
    except (MixError, FaultSpecError, ShardSpecError) as exc:
        raise CliError(str(exc)) from None
    topics = topics_from(args)
    per_car = args.mode == "per-car" or (args.mode is None and args.count <= PER_CAR_MAX_DEFAULT)
    gw = gateway_id(args.seed, shard_index, shard_count)
    if args.write_users is not None:
        names = [gw]
        if per_car:
            last = max(args.count, args.grow_to or 0)
            names += [vehicle_id(args.seed, g) for g in owned_indices(0, last, shard_index, shard_count)]
        try:
            args.write_users.write_text("\n".join(names) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write --write-users {args.write_users}: {exc.strerror}") from None
        return 0
    return _run_fleet(args, topics, mix, faults, (shard_index, shard_count), per_car, gw)


def _run_fleet(args: argparse.Namespace, topics: Topics, mix: dict[HardwareGeneration, float],
               faults: FaultConfig, shard: tuple[int, int], per_car: bool, gw: str) -> int:
    start = _sim_start(args.sim_start)
    offset = start.utcoffset()
    utc_offset_s = offset.total_seconds() if offset is not None else 0.0
    url = broker_for(args, gw)
    secret = read_secret(args.secret_file)
    base = broker_for(args, None)

    def car_url(vid: str) -> BrokerUrl:
        return login_as(base, vid, secret)

    config = FleetConfig(seed=args.seed, count=args.count, shard_index=shard[0], shard_count=shard[1], mix=mix,
                         faulty_share=args.faulty_share, telemetry_interval_s=args.telemetry_interval,
                         faults=faults, gateway=None if per_car else gw)
    fleet = Fleet(config, Encoder(topics, utc_offset_s, config.gateway), random.Random(args.seed))
    settings = RunSettings(url=url, gateway_id=gw, per_car=per_car, local_start=start.timestamp() + utc_offset_s,
                           car_url=car_url, grow_to=args.grow_to, grow_over_s=args.grow_over,
                           duration_s=args.duration, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                           fleet_telemetry=_fleet_telemetry(args, topics))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runner = Runner(fleet, SimClock(args.speed, start, epoch=args.sim_epoch), settings, stop)
    try:
        runner.connect()
    except StartupError as exc:
        runner.metrics.close()
        raise CliError(str(exc)) from None
    if runner.metrics.url is not None:
        print(f"fleetroom vehicles: metrics for Prometheus at {runner.metrics.url}", file=sys.stderr, flush=True)
    mode = f"per-car connections, process {gw}" if per_car else f"gateway {gw}"
    print(f"fleetroom vehicles: {fleet.pending_cars} of {args.count} cars ({mode}) on {url}, "
          f"sim start {start.isoformat()}, speed {args.speed:g}x", file=sys.stderr, flush=True)
    code = runner.run()
    if runner.guard.conflict is not None:
        raise CliError(f"stopped: {runner.guard.conflict}")
    return code
