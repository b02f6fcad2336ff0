"""`fleetroom submit`: flags and job files, one-line errors, and --wait following a job to its end."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from fleetroom.cli import main
from tests.support.brokers import TestBroker
from tests.support.demo_loadtest import fleetroom_on
from tests.support.scripted_cars import CarScript, Watcher, dispatcher_running, scripted_fleet
from tests.support.waiting import wait_until


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "x", "--work", "10"], "missing --shards"),
        (["--name", "x", "--work", "10", "--shards", "0", "--min-tops", "5"], "argument --shards: must be"),
        (["--name", "x", "--work", "10", "--shards", "4", "--min-tops", "5", "--parallel", "9"], "bad job: "),
        (["--name", "x", "--work", "10", "--shards", "4", "--min-tops", "5", "--redundancy", "9"], "redundancy"),
        (["--file", "{dir}/missing.toml"], "cannot read job file"),
        (["--file", "{dir}/bad.json"], "is not valid JSON"),
        (["--file", "{dir}/unknown.toml"], "unknown key 'colour'"),
    ],
)
def test_bad_flags_and_files_are_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.json").write_text('{"name": "a",')
    (tmp_path / "unknown.toml").write_text('name = "a"\nwork = 10.0\nshards = 1\nmin_tops = 5.0\ncolour = "red"\n')
    gc.collect()  # so that no earlier test's garbage logs "Future exception was never retrieved" into stderr
    code = main(["submit", "--broker", "mqtt://127.0.0.1:1", *(a.format(dir=tmp_path) for a in argv)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err


async def run_submit(broker: TestBroker, *argv: str) -> tuple[int, str]:
    return await fleetroom_on(broker.port, broker.topics.prefix, "submit", *argv)


async def test_submit_wait_follows_a_job_file_to_done_and_a_bad_job_to_rejection(
    amqtt_broker: TestBroker, tmp_path: Path
) -> None:
    job_file = tmp_path / "job.toml"
    job_file.write_text('name = "render"\nwork = 3000.0\nshards = 3\nmin_tops = 100.0\nkind = "rendering"\n'
                        'redundancy = 2\nparallel = 4\nprice_cap = 0.5\n')
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    scripts = [CarScript(f"car-{i}") for i in range(3)]
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite"), Watcher(url, topics) as watch, \
            scripted_fleet(url, topics, scripts):
        await asyncio.wait_for(watch.summary_seen.wait(), 10)
        code, out = await run_submit(amqtt_broker, "--file", str(job_file), "--job-id", "job-file", "--wait")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0] == "job-file"
        assert "job-file: done 3/3 shards (100%)" in lines[-1]
        code, out = await run_submit(amqtt_broker, "--name", "huge", "--work", "100", "--shards", "1",
                                     "--min-tops", "50000", "--wait")
        assert code == 1, out
        assert "rejected" in out and "exceeds the largest car" in out


async def test_submit_without_wait_needs_an_online_dispatcher(amqtt_broker: TestBroker, tmp_path: Path) -> None:
    job = ("--name", "x", "--work", "100", "--shards", "1", "--min-tops", "50")
    code, out = await run_submit(amqtt_broker, *job, "--job-id", "job-lost")
    assert code == 1, out
    lines = out.splitlines()
    assert len(lines) == 1 and "no dispatcher is online" in lines[0] and "job-lost" not in out, out  # no id
    url, topics = amqtt_broker.url(), amqtt_broker.topics
    async with dispatcher_running(amqtt_broker, tmp_path / "l.sqlite"), Watcher(url, topics) as watch:
        code, out = await run_submit(amqtt_broker, *job, "--job-id", "job-sent")
        assert code == 0, out
        assert out.splitlines()[0] == "job-sent"
        await wait_until(lambda: watch.status("job-sent") is not None, what="the dispatcher to take the job")
    assert watch.status("job-lost") is None


async def test_submit_wait_gives_up_after_its_timeout_in_one_line(amqtt_broker: TestBroker) -> None:
    """No dispatcher answers: --wait --timeout 1.5 ends in one line, exit 3, instead of waiting for ever."""
    job = ("--name", "x", "--work", "100", "--shards", "1", "--min-tops", "50", "--job-id", "job-slow")
    started = asyncio.get_running_loop().time()
    code, out = await run_submit(amqtt_broker, *job, "--wait", "--timeout", "1.5")
    assert code == 3, out
    lines = out.splitlines()
    assert lines[0] == "job-slow" and len(lines) == 2, out
    assert "job-slow had not ended after --timeout 1.5 s" in lines[1]
    assert asyncio.get_running_loop().time() - started < 30


def test_timeout_without_wait_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["submit", "--broker", "mqtt://127.0.0.1:1", "--name", "x", "--work", "1", "--shards", "1",
                 "--min-tops", "5", "--timeout", "3"])
    assert code == 2 and capsys.readouterr().err.strip().endswith("--timeout needs --wait")
