"""The demo's pure pieces: the growth plan, the shifting hardware mix, and the printed summary."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetroom.cli import main
from fleetroom.compose.driver import EARLY_MIX, LATE_MIX, growth_plan, mix_at
from fleetroom.compose.summary import format_summary
from protocol import FleetSummary, HardwareGeneration, MatchPolicy
from protocol.reference import INT8_VS_FP64_NOTE
from protocol.topics import Topics

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def summary(cars: int, tops: float, **extra: object) -> FleetSummary:
    fields: dict[str, object] = dict(
        sender="dispatcher", sent_at=T0, sim_time=T0, cars_known=cars, cars_by_state={"idle": cars},
        cars_by_hardware={"HW5": cars}, tops_total=tops, tops_offered=tops, tops_allocated=0.0,
        tops_by_hardware={"HW5": tops}, jobs_by_status={"done": 3}, shards_completed=12, work_done_tera_ops=1e6,
        throughput_tops=0.0, preemptions=1, redone_tera_ops=10.0, wrong_results_caught=0, earnings_gross=1.5,
        energy_kwh=0.2, energy_cost=0.05, messages_per_s=100.0, messages_rejected=0, policy=MatchPolicy.FASTEST,
    )
    fields.update(extra)
    return FleetSummary(**fields)  # type: ignore[arg-type]


def test_growth_plan_reaches_the_target_geometrically() -> None:
    plan = growth_plan(20, 2000, 24)
    assert sum(plan) == 1980 and len(plan) == 24
    assert plan[0] < plan[-1]  # geometric: small steps first
    assert growth_plan(20, 20, 5) == [] and growth_plan(20, 10, 5) == []


def test_mix_moves_from_old_to_new_hardware() -> None:
    assert mix_at(0.0) == EARLY_MIX and mix_at(1.0) == LATE_MIX
    half = mix_at(0.5)
    assert abs(sum(half.values()) - 1) < 1e-3
    assert half["HW6"] > 0 and half["HW3"] > 0
    assert mix_at(0.9)["HW5"] + mix_at(0.9)["HW6"] > mix_at(0.1)["HW5"] + mix_at(0.1).get("HW6", 0)


def test_essay_scale_reads_as_the_essay_computes_with_the_int8_note() -> None:
    text = format_summary(summary(1_000_000, 5e9, scenario_scale="essay: 1,000,000 HW5 cars"), {}, 30)
    assert "11,363 Fugakus" in text and "1,820 El Capitans" in text and "4,166 Frontiers" in text
    assert INT8_VS_FP64_NOTE in text
    assert "1,000,000 known (essay: 1,000,000 HW5 cars)" in text
    assert "5.0 GTOPS total" in text


def test_essay_mode_adds_the_target_and_how_many_cars_are_emulated() -> None:
    hw5 = {HardwareGeneration.HW5: 1.0}
    text = format_summary(summary(1_000_000, 5e9), {}, 60, essay=(2000, hw5))
    assert "the essay's scale: 1,000,000 HW5 cars x 5,000 TOPS = 5.0 GTOPS = 11,363 Fugakus" in text
    assert "1,820 El Capitans (peak); 2,000 cars emulated, each standing for 500" in text
    assert "every car emulated" in format_summary(summary(1_000_000, 5e9), {}, 60, essay=(1_000_000, hw5))


def test_the_essay_hw6_line_is_one_flag_away() -> None:
    """`--hardware-mix HW6=1`: 1,000,000 x 20,000 TOPS = 20 GTOPS = 45,454 Fugakus, 7,283 El Capitans."""
    text = format_summary(summary(1_000_000, 2e10), {}, 60, essay=(2000, {HardwareGeneration.HW6: 1.0}))
    assert "1,000,000 HW6 cars x 20,000 TOPS = 20.0 GTOPS = 45,454 Fugakus, 16,666 Frontiers, 7,283 El Capitans" in text


def test_summary_shows_what_the_wire_carried() -> None:
    seen = {"offer": 40, "shard_assign": 9, "shard_result": 7, "telemetry": 300}
    text = format_summary(summary(25, 25 * 5000.0), seen, 12)
    assert "40 offers, 9 assignments, 7 shard results" in text
    assert "shards completed: 12" in text and "jobs: done 3" in text


def test_summary_without_a_dispatcher_says_so() -> None:
    assert "no FleetSummary" in format_summary(None, {}, 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--headless"], "--headless needs --duration"),
        (["demo", "--broker", "http://x"], "scheme must be mqtt://"),
        (["demo", "--cars", "0", "--headless", "--duration", "1"], "argument --cars: must be a whole number"),
        (["demo", "--topic-prefix", "Bad Prefix"], "topic prefix"),
    ],
)
def test_bad_demo_flags_are_one_line_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_ledgers_money_reads_the_same_in_the_closing_summary_the_status_line_and_the_history() -> None:
    from fleetroom.commands.dispatcher import status_line
    from tui.chartdata import CHARTS, chart_data
    from tui.store import FleetStore

    s = summary(10, 1e5, earnings_gross=10.0, robotaxi_gross=5.0, energy_cost=3.0, earnings_net=12.0)
    line = "gross 15.00 (compute 10.00 + robotaxi 5.00), energy cost 3.00, net 12.00 USD"
    assert line in format_summary(s, {}, 30) and line in status_line(s)
    store = FleetStore(Topics("fleetroom"))
    store.summary = s
    values = store.history_values()
    assert (values["earnings"], values["earnings_net"]) == (15.0, 12.0)
    chart = next(c for c in CHARTS if "earnings" in c.series)
    assert chart_data(chart, {"earnings": [15.0], "earnings_net": [12.0]}, 1.0).heading.endswith("gross 15, net 12")
