"""Run a scripted load test from a scenario file and judge it against its objectives.

The scenario (scenarios/*.toml) describes the fleet, a stream of AI jobs, and stages run in
order: connect_ramp, steady, reconnect_storm, mass_departure (at 17:00 simulated),
broker_restart, dispatcher_kill, faulty_cars, drain. Every part runs as its own process; an
observer measures end-to-end latency (now - sent_at) and assignment latency (submission to
first ShardAssignment) in HDR histograms. Live counters go to stderr; at the end a summary is
printed and report.json, report.md and latency.svg are written to the output directory.

Exit code: 0 when every objective in [slo] is met, 1 when one is not, 2 for a bad scenario
file or flag.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from fleetroom.common import CliError, add_tls_arguments, read_secret, setup_logging, url_from_flag, whole
from fleetroom.compose.stack import MOSQUITTO, Stack
from fleetroom.compose.supervisor import ChildDied, NotReady, Supervisor
from fleetroom.loadtest.progress import ProgressPrinter
from fleetroom.loadtest.runner import LoadTest
from fleetroom.loadtest.scenario import Scenario, ScenarioError, load_scenario
from fleetroom.loadtest.slo import Verdict
from mqttlink import BrokerUnreachable, check_broker
from protocol import TopicError, Topics
from protocol.identity import SECRET_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", type=Path, help="scenario file, e.g. scenarios/small.toml")
    parser.add_argument("--broker", metavar="URL", help="use this running broker (no broker_restart stage)")
    add_tls_arguments(parser)
    parser.add_argument("--secret-file", type=Path,
                        help=f"with --broker: the fleet secret every part derives its login from (default: "
                        f"${SECRET_ENV}, else .fleetroom/secret if it exists; none means anonymous)")
    parser.add_argument("--broker-kind", choices=("embedded", "mosquitto"),
                        help="start this broker instead of the scenario's choice")
    parser.add_argument("--fleet-processes", type=whole(1, 64), metavar="N",
                        help="spread the fleet over N `fleetroom vehicles` processes (overrides the scenario)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where logs and the report go (default: .fleetroom/runs/loadtest-NAME-TIME)")
    parser.add_argument("--topic-prefix", default="fleetroom", help="topic prefix (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def _prepare(args: argparse.Namespace) -> tuple[Scenario, Topics, Path]:
    try:
        scenario = load_scenario(args.scenario)
        topics = Topics(args.topic_prefix)
    except (ScenarioError, TopicError) as exc:
        raise CliError(str(exc)) from None
    if args.fleet_processes is not None:
        scenario = _with_processes(scenario, args.fleet_processes)
    if args.broker and any(s.kind == "broker_restart" for s in scenario.stages):
        raise CliError(f"{args.scenario} restarts the broker, which an external --broker cannot do")
    out = args.out or Path(".fleetroom/runs") / f"loadtest-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    return scenario, topics, out


def _with_processes(scenario: Scenario, processes: int) -> Scenario:
    """`scenario` with its fleet spread over `processes` (a flag its type has checked)."""
    return scenario.model_copy(update={"fleet": scenario.fleet.model_copy(update={"processes": processes})})


def _start_broker(stack: Stack, args: argparse.Namespace, scenario: Scenario) -> None:
    url = url_from_flag(args.broker, args)
    if url is not None:
        stack.use_external(url)
        stack.use_secret(read_secret(args.secret_file))  # each part logs in under its own role
        try:  # a refused login is one line, before any part starts
            asyncio.run(check_broker(stack.login("operator")))
        except BrokerUnreachable as exc:
            raise CliError(str(exc)) from None
        return
    kind = args.broker_kind or scenario.broker
    if kind == "mosquitto":
        if MOSQUITTO is None:
            raise CliError("mosquitto is not installed (apt-get install mosquitto), or use --broker-kind embedded")
        stack.start_mosquitto()
    else:
        stack.start_embedded()


def print_summary(report: dict[str, Any], verdicts: list[Verdict], paths_dir: Path) -> None:
    """The end-of-run summary on stdout."""
    lat, asg, jobs = report["latency"], report["assignment_latency"], report["jobs"]
    print(f"load test {report['scenario']} on {report['broker']}: {report['duration_s']:.1f} s, "
          f"{report['counters']['receives']:,} messages ({report['messages_per_s']:,.1f}/s)")
    print(f"  end-to-end latency ms: p50 {lat['p50_ms']:,.1f}  p95 {lat['p95_ms']:,.1f}  "
          f"p99 {lat['p99_ms']:,.1f}  max {lat['max_ms']:,.1f}  ({lat['count']:,} samples)")
    print(f"  assignment latency ms: p50 {asg['p50_ms']:,.1f}  p95 {asg['p95_ms']:,.1f}  "
          f"p99 {asg['p99_ms']:,.1f}  max {asg['max_ms']:,.1f}  ({asg['count']:,} jobs)")
    print(f"  jobs: {jobs['submitted']} submitted, {jobs['completed']} completed, {jobs['unfinished']} unfinished, "
          f"{jobs['lost']} lost, {jobs['resubmitted']} sent again")
    print(f"  work: {jobs['preemptions']} preemptions, {jobs['redone_tera_ops']:,.0f} tera-ops redone, "
          f"{jobs['wrong_results_caught']} wrong results caught")
    print(f"  whole stack peak memory: {report['stack']['peak_rss_mib']:,.0f} MiB; state changes from rosters: "
          f"{report['counters']['state_changes']:,}; offer frames missed: {report['counters']['frames_missed']:,}")
    probe = report["probe_latency"]
    print(f"  observer's probe to itself ms: p50 {probe['p50_ms']:,.1f}  p99 {probe['p99_ms']:,.1f}  "
          f"(the floor the broker and the observer add)")
    for verdict in verdicts:
        print(f"  {verdict.line()}")
    print(f"  report: {paths_dir / 'report.md'} (also report.json, latency.svg)")


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the supervisor, which stops every child


def run(args: argparse.Namespace) -> int:
    scenario, topics, out = _prepare(args)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    try:
        out.mkdir(parents=True, exist_ok=True)
        setup_logging(args.verbose, out / "loadtest.log")
    except OSError as exc:
        raise CliError(f"cannot use --out {out}: {exc.strerror or exc}") from None
    printer = ProgressPrinter(sys.stderr)
    with Supervisor(out) as supervisor:
        stack = Stack(supervisor, topics.prefix)
        try:
            _start_broker(stack, args, scenario)
        except (ChildDied, NotReady) as exc:
            print(f"fleetroom loadtest: the broker did not start: {exc}", file=sys.stderr)
            return 1
        test = LoadTest(scenario, stack, topics, supervisor.run_dir, printer)
        report, verdicts = asyncio.run(test.run())
    print_summary(report, verdicts, supervisor.run_dir)
    if report["aborted"]:
        print(f"fleetroom loadtest: aborted: {report['aborted']}", file=sys.stderr)
    return 0 if all(v.passed for v in verdicts) else 1
