"""The demo's driver process: a stream of realistic jobs, and a fleet that grows in steps whose
hardware mix moves from HW3/HW4 towards HW5/HW6 (AddCars on the fleet control topic).

Run as `python -m fleetroom.compose.driver --broker URL ...`; `fleetroom demo` starts it. It
submits jobs and commands the fleet, so it logs in as `operator` (password derived from
$FLEETROOM_SECRET) unless the URL names a user.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import sys
from datetime import datetime

import aiomqtt

from fleetroom.common import SIM_EPOCH_HELP, DispatcherWatch, sim_epoch
from fleetroom.compose.jobstream import ESSAY_MIX, LIGHT_MIX, JobStream
from mqttlink import (
    BROKER_ENV,
    BrokerUnreachable,
    BrokerUrl,
    BrokerUrlError,
    NoDispatcher,
    OperatorLink,
    broker_url_from,
    cancel_and_wait,
    client_id_of,
    stay_connected,
)
from protocol import Topics, utc_now
from protocol.clock import SimClock
from protocol.identity import SECRET_ENV, derive_password

log = logging.getLogger(__name__)

ROLE = "operator"  # submits jobs and sends AddCars
SENDER = "demo-driver"
EARLY_MIX = {"HW3": 0.3, "HW4": 0.6, "HW5": 0.1}
LATE_MIX = {"HW4": 0.1, "HW5": 0.6, "HW6": 0.3}
STEP_S = 5.0
JOB_MIXES = {"light": LIGHT_MIX, "essay": ESSAY_MIX}


def growth_plan(start: int, target: int, steps: int) -> list[int]:
    """Cars to add at each step so the fleet grows geometrically from `start` to `target`."""
    if steps < 1 or target <= start:
        return []
    ratio = (target / start) ** (1 / steps)
    sizes = [round(start * ratio**k) for k in range(steps + 1)]
    sizes[-1] = target
    return [max(0, b - a) for a, b in itertools.pairwise(sizes)]


def mix_at(fraction: float) -> dict[str, float]:
    """The hardware mix of new cars `fraction` of the way through the growth (0 early, 1 late)."""
    f = min(1.0, max(0.0, fraction))
    names = sorted(set(EARLY_MIX) | set(LATE_MIX))
    mix = {n: (1 - f) * EARLY_MIX.get(n, 0.0) + f * LATE_MIX.get(n, 0.0) for n in names}
    return {n: round(share, 4) for n, share in mix.items() if share > 0}


async def drive(args: argparse.Namespace) -> None:
    """Publish jobs at `--job-rate` per second and AddCars steps until stopped."""
    topics = Topics(args.topic_prefix)
    clock = SimClock(args.speed, datetime.fromisoformat(args.sim_start), epoch=args.sim_epoch)
    stream = JobStream(random.Random(args.seed), JOB_MIXES[args.job_mix],
                       sender=SENDER, prefix=f"demo{random.randrange(16**4):04x}", scale=args.job_scale)
    steps = max(1, round(args.grow_over / STEP_S))
    plan = growth_plan(args.start_cars, args.grow_to, steps) if args.grow_to else []
    state = {"step": 0, "job_credit": 1.0}
    dispatchers = DispatcherWatch()

    async def session(client: aiomqtt.Client) -> None:
        # Submissions are not retained: one sent before a dispatcher has subscribed reaches
        # nobody and would show as "submitted" for ever. Jobs flow only while one is online.
        await client.subscribe(topics.all_connections, qos=1)
        watcher = asyncio.create_task(dispatchers.follow(client))
        link = OperatorLink(client, topics, sender=SENDER, sim_time=clock.now,
                            dispatcher_online=lambda: dispatchers.online)
        try:
            await _drive(link, watcher)
        finally:
            await cancel_and_wait(watcher)

    async def _drive(link: OperatorLink, watcher: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        next_step = loop.time() + STEP_S
        was_online: bool | None = None
        while not watcher.done():
            online = dispatchers.online
            if online != was_online:
                log.info("a dispatcher is online" if online else "no dispatcher online: holding the job stream")
                was_online = online
            if online:
                state["job_credit"] += args.job_rate * 0.25
            with contextlib.suppress(NoDispatcher):  # it went offline mid-burst: hold the rest
                while online and state["job_credit"] >= 1.0:
                    state["job_credit"] -= 1.0
                    await link.submit(stream.next(utc_now(), clock.now()))
            step = int(state["step"])
            if step < len(plan) and loop.time() >= next_step:
                if plan[step]:
                    mix = args.hardware_mix or mix_at((step + 1) / len(plan))
                    await link.add_cars(plan[step], hardware_mix=mix)
                state["step"] = step + 1
                next_step += STEP_S
            await asyncio.sleep(0.25)
        watcher.result()  # the link was lost: raise its MqttError so that stay_connected reconnects

    await stay_connected(args.broker_url, client_id_of(args.broker_url, ROLE), session)


def _mix(text: str) -> dict[str, float]:
    """`HW5=0.5,HW6=0.5` as a dict; the fleet checks the names."""
    try:
        return {name.strip(): float(share) for name, share in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad hardware mix {text!r}: expected HWn=SHARE,...") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fleetroom.compose.driver", description=__doc__)
    parser.add_argument("--broker", help=f"broker URL (default: ${BROKER_ENV}, which carries any password)")
    parser.add_argument("--topic-prefix", default="fleetroom")
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--sim-start", required=True)
    parser.add_argument("--sim-epoch", type=sim_epoch, metavar="UNIX_SECONDS", help=SIM_EPOCH_HELP)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--job-rate", type=float, default=0.5, help="jobs per wall second")
    parser.add_argument("--job-scale", type=float, default=1.0)
    parser.add_argument("--job-mix", choices=sorted(JOB_MIXES), default="light",
                        help="light: jobs for HW3/HW4 cars; essay: 70B-model jobs sized to fill HW5/HW6 cars")
    parser.add_argument("--hardware-mix", type=_mix, default=None, metavar="MIX",
                        help="hardware of the cars added while growing, e.g. HW6=1 (default: HW3/HW4 towards HW5/HW6)")
    parser.add_argument("--start-cars", type=int, default=20)
    parser.add_argument("--grow-to", type=int, default=0, help="0: no growth")
    parser.add_argument("--grow-over", type=float, default=120.0, help="wall seconds")
    args = parser.parse_args(argv)
    try:
        url: BrokerUrl | None = broker_url_from(args.broker)
    except BrokerUrlError as exc:
        parser.error(str(exc))
    if url is None:
        parser.error(f"no --broker and no ${BROKER_ENV}")
    secret = os.environ.get(SECRET_ENV)
    if secret and not url.username:
        url = url.with_credentials(ROLE, derive_password(secret.encode(), ROLE))
    args.broker_url = url
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(drive(args))
    except BrokerUnreachable as exc:
        print(f"demo driver: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
