"""`fleetroom earnings` as a real process on a real ledger file: the ledger's tables as text, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.ledger import earnings as book
from protocol import OwnerMode
from tests.test_dispatcher_money import Money
from tests.test_earnings_ledger import _computed, _mode, _trip


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("earnings") / "ledger.sqlite"
    m = Money(path)
    _computed(m, "car-a", "car-b")
    _mode(m, "car-r", OwnerMode.ROBOTAXI, owner="owner-07")
    for n in range(4):
        m.later(18.0)  # one 18-minute trip after another (60x)
        _trip(m, "car-r", n)
    m.later(24 * 60.0 - 4 * 18.0)  # a simulated day in robotaxi mode
    m.ledger.save_clock(m.engine.clock.now_s, 0.0)
    m.ledger.close()
    return path


def earnings(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetroom", "earnings", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def test_csv_by_car_is_the_ledgers_cars(ledger: Path) -> None:
    proc = earnings("--ledger", str(ledger), "--by", "car", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["car"] for r in rows] == ["car-r", "car-a", "car-b"]  # highest net first
    robotaxi = rows[0]
    assert (robotaxi["owner"], robotaxi["mode"], robotaxi["trips"]) == ("owner-07", "robotaxi", "4")
    assert float(robotaxi["net"]) == pytest.approx(float(robotaxi["robotaxi"]) - float(robotaxi["energy_cost"]))


def test_json_by_owner_and_fleet_agree_with_the_ledger(ledger: Path) -> None:
    owners = json.loads(earnings("--ledger", str(ledger), "--by", "owner", "--format", "json").stdout)["rows"]
    (fleet,) = json.loads(earnings("--ledger", str(ledger), "--by", "fleet", "--format", "json").stdout)["rows"]
    assert sum(o["net"] for o in owners) == pytest.approx(fleet["net"], abs=1e-5)
    import sqlite3
    db = sqlite3.connect(ledger)
    assert fleet["net"] == pytest.approx(book.fleet_money(db).net, abs=1e-5) and fleet["cars"] == 3


def test_the_mode_table_sets_each_mode_against_the_car_payment_and_labels_the_claim(ledger: Path) -> None:
    proc = earnings("--ledger", str(ledger), "--by", "mode")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["MODE", "CARS_NOW"] and "OF_CAR_PAYMENT" in lines[0]
    robotaxi = next(line for line in lines if line.startswith("robotaxi"))
    assert robotaxi.split()[-3] == "32.6000"  # 4 trips x 8.45 USD - 4 x 2 kWh x 0.15 USD, in one day
    assert next(line for line in lines if line.startswith("none")).split()[-1] == "-"  # no car-days: no figure
    assert any(line.startswith("claim (essay):") for line in lines)
    assert any("car_payment = 740 USD per month" in line for line in lines)


@pytest.mark.parametrize("args", [("--ledger", "/nonexistent/ledger.sqlite"), ("--ledger", "x", "--by", "planet"),
                                  ("--ledger", "x", "--format", "xml"), ("--ledger", "x", "--top", "0")])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    proc = earnings(*args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["led#ger.sqlite", "led?mode=rw.sqlite"])
def test_a_ledger_path_with_a_hash_or_question_mark_opens_that_file_read_only(
        ledger: Path, tmp_path: Path, name: str) -> None:
    """The read-only URI is built by pathlib: the path's `#` or `?` names no other file to create."""
    odd = tmp_path / name
    shutil.copy(ledger, odd)
    proc = earnings("--ledger", str(odd), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"][0]["cars"] == 3
    others = [p.name for p in tmp_path.iterdir() if not p.name.startswith(name)]  # beside it: its -wal, -shm
    assert others == [], "another file was opened (and created)"


def test_the_ledger_defaults_to_the_dispatchers_default_db(ledger: Path, tmp_path: Path) -> None:
    proc = earnings("--format", "json", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "fleetroom earnings: error: no ledger at .fleetroom/ledger.sqlite (the dispatcher's --db file; "
        "give it with --ledger PATH)"], proc.stderr
    (tmp_path / ".fleetroom").mkdir()
    shutil.copy(ledger, tmp_path / ".fleetroom" / "ledger.sqlite")
    proc = earnings("--format", "json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout)["rows"][0]["cars"] == 3, proc.stderr
