"""Submit a job to the dispatcher, from flags or a TOML/JSON job file; --wait follows it to the end.

Prints the job id once the job is sent (nothing when it is refused: no dispatcher online). With
--wait it prints the job's progress and exits 0 when it is done, 1 if it failed, was rejected or
cancelled; with --wait --timeout S it gives up after S wall seconds with one line and exit code 3.
Job file keys are the flag names with underscores (name, work, shards, min_tops, parallel,
deadline_s, priority, price_cap, redundancy, checkpoint_interval, kind, min_hardware, input_seed,
job_id); flags override the file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from pydantic import ValidationError

from fleetroom.common import (
    CliError,
    DispatcherWatch,
    add_broker_arguments,
    broker_for,
    finite,
    run_async,
    setup_logging,
    topics_from,
)
from fleetroom.files import FileError
from fleetroom.jobfile import (
    CHECKPOINT_INTERVAL_S,
    DEADLINE_S,
    MIN_TOPS,
    PRICE_CAP,
    PRIORITY,
    REDUNDANCY,
    SHARDS,
    WIRE_NAMES,
    WORK,
    load_job_file,
)
from mqttlink import BrokerUrl, NoDispatcher, OperatorLink, client_id_of, stay_connected
from protocol import JobKind, JobState, JobStatus, JobSubmission, ProtocolError, Topics, decode_on, utc_now

RESUBMIT_EVERY_S = 5.0
TIMED_OUT = 3  # exit code of --wait --timeout when the job has not ended in time
WAIT_TIMEOUT_S = finite(0.1, 10 * 365 * 86400.0)
DISPATCHER_GRACE_S = 2.0  # how long to wait for a dispatcher's retained `online` status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser)
    parser.add_argument("--file", type=Path, help="job file, .toml or .json")
    parser.add_argument("--name", help="job name")
    parser.add_argument("--work", type=WORK, metavar="TERA_OPS", help="total work in tera-operations")
    parser.add_argument("--shards", type=SHARDS, metavar="K", help="number of shards")
    parser.add_argument("--min-tops", type=MIN_TOPS, metavar="T", help="minimum TOPS per car")
    parser.add_argument("--parallel", type=SHARDS, metavar="P", help="shards that may run at once (default: all)")
    parser.add_argument("--deadline-s", type=DEADLINE_S, metavar="S", help="deadline, simulation seconds from now")
    parser.add_argument("--priority", type=PRIORITY, help="-100..100, higher first (default: 0)")
    parser.add_argument("--price-cap", type=PRICE_CAP, metavar="X", help="most the job pays per TOPS-hour")
    parser.add_argument("--redundancy", type=REDUNDANCY, metavar="R",
                        help="cars that must agree on each shard (default: 1)")
    parser.add_argument("--checkpoint-interval", type=CHECKPOINT_INTERVAL_S, metavar="S",
                        help="simulation seconds (default: 60)")
    parser.add_argument("--kind", choices=[k.value for k in JobKind], help="what the job is (default: other)")
    parser.add_argument("--job-id", help="job id (default: a fresh one)")
    parser.add_argument("--wait", action="store_true", help="follow the job to the end; exit 1 unless it is done")
    parser.add_argument("--timeout", type=WAIT_TIMEOUT_S, metavar="S",
                        help="with --wait: give up after S wall seconds (exit 3; default: wait for ever)")


def build_job(args: argparse.Namespace) -> JobSubmission:
    """The submission the flags and file describe; a problem is one CliError line."""
    try:
        values: dict[str, Any] = load_job_file(args.file) if args.file is not None else {}
    except FileError as exc:
        raise CliError(str(exc)) from None
    for key in (*WIRE_NAMES, "deadline_s"):
        flag = getattr(args, key, None)
        if flag is not None:
            values[key] = flag
    for key in ("name", "work", "shards", "min_tops"):
        if key not in values:
            raise CliError(f"missing --{key.replace('_', '-')} (or give a --file with it)")
    now = utc_now()
    fields = {WIRE_NAMES[key]: value for key, value in values.items() if key in WIRE_NAMES}
    fields.setdefault("job_id", f"job-{secrets.token_hex(4)}")
    fields.setdefault("max_parallel_shards", fields["shards"] * fields.get("redundancy", 1))
    if "deadline_s" in values:
        fields["deadline"] = now + timedelta(seconds=values["deadline_s"])
    try:
        return JobSubmission.model_validate_json(json.dumps(
            {"sender": "operator", "sent_at": now.isoformat(), "sim_time": now.isoformat(), **fields},
            default=str))
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        raise CliError(f"bad job: {where}: {first['msg']}") from None


def describe(state: JobState) -> str:
    """One progress line for a job state."""
    line = (f"{state.job_id}: {state.status.value} {state.shards_done}/{state.shards_total} shards "
            f"({state.progress:.0%}), {state.shards_running} running, cost {state.cost:.4f}")
    if state.preemptions or state.wrong_results:
        line += f", {state.preemptions} preemptions, {state.wrong_results} wrong results caught"
    if state.reason:
        line += f" - {state.reason}"
    if state.wait_reasons and state.status is JobStatus.QUEUED:
        why = "; ".join(f"{r.cars_failing} cars fail {r.requirement}" for r in state.wait_reasons[:4])
        line += f" | waiting: {why}"
    return line


async def _submit(url: BrokerUrl, topics: Topics, job: JobSubmission, wait: bool) -> int:
    outcome = [0]

    async def session(client: aiomqtt.Client) -> None:
        if not wait:
            # Submissions are not retained: with no dispatcher subscribed the job reaches nobody.
            online = await _dispatcher_online(client, topics)
            try:
                await OperatorLink(client, topics, sender=job.sender, dispatcher_online=lambda: online).submit(job)
                print(job.job_id, flush=True)
            except NoDispatcher:
                raise CliError(
                    f"no dispatcher is online under {topics.prefix}/ (its status says offline or was never "
                    f"seen): the job would reach nobody; start one, or use --wait to submit as soon as one is",
                    exit_code=1,
                ) from None
            return
        await client.subscribe(topics.job_state(job.job_id), qos=1)
        # --wait resubmits until the dispatcher answers, so a submission nobody heard is harmless.
        outcome[0] = await _follow(client, OperatorLink(client, topics, sender=job.sender, dispatcher_online=None), job)

    await stay_connected(url, client_id_of(url, "submit"), session)
    return outcome[0]


async def _submit_within(url: BrokerUrl, topics: Topics, job: JobSubmission, wait: bool,
                         timeout_s: float | None) -> int:
    """`_submit`, given up after `timeout_s` wall seconds (one line, exit code TIMED_OUT)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _submit(url, topics, job, wait)
    except TimeoutError:
        raise CliError(f"{job.job_id} had not ended after --timeout {timeout_s:g} s", exit_code=TIMED_OUT) from None


async def _dispatcher_online(client: aiomqtt.Client, topics: Topics) -> bool:
    """Whether a dispatcher's retained status says online, within a short grace period."""
    watch = DispatcherWatch()
    await client.subscribe(topics.all_connections, qos=1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DISPATCHER_GRACE_S):
            await watch.follow(client, until_online=True)
    return watch.online


async def _follow(client: aiomqtt.Client, link: OperatorLink, job: JobSubmission) -> int:
    last = ""
    seen = False
    printed = False
    while True:
        if not seen:
            await link.submit(job)  # idempotent: the id decides
            if not printed:
                print(job.job_id, flush=True)
                printed = True
        try:
            async with asyncio.timeout(RESUBMIT_EVERY_S):
                async for message in client.messages:
                    try:
                        _, state = decode_on(link.topics, str(message.topic), bytes(message.payload))
                    except ProtocolError:
                        continue
                    if not isinstance(state, JobState) or state.job_id != job.job_id:
                        continue
                    seen = True
                    line = describe(state)
                    if line != last:
                        print(line, flush=True)
                        last = line
                    if state.status not in (JobStatus.QUEUED, JobStatus.RUNNING):
                        return 0 if state.status is JobStatus.DONE else 1
        except TimeoutError:
            continue


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    job = build_job(args)
    url = broker_for(args, "operator")
    topics = topics_from(args)
    if args.timeout is not None and not args.wait:
        raise CliError("--timeout needs --wait")
    try:
        return run_async(_submit_within(url, topics, job, args.wait, args.timeout))
    except KeyboardInterrupt:
        print(f"stopped following {job.job_id}", file=sys.stderr)
        return 130
