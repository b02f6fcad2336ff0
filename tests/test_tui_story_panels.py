"""The control room's text at 160 columns: flags first, whole reasons, bars that fit, fractional Fugakus."""

from __future__ import annotations

from protocol import Topics, WaitReason, encode
from tests.support import control_room as cr
from tui import panels
from tui.details import reliability_text
from tui.jobview import why_waiting
from tui.store import FleetStore


def test_why_waiting_keeps_whole_reasons_and_counts_the_rest() -> None:
    reasons = [WaitReason(requirement=f"free_tops >= {8000 * i}", cars_failing=1000 * i) for i in range(1, 6)]
    assert why_waiting(reasons, "") == "1,000 fail free_tops >= 8000 (+4 more: enter)"
    assert why_waiting(reasons[:2], "", width=120) == "1,000 fail free_tops >= 8000; 2,000 fail free_tops >= 16000"
    assert why_waiting([], "no car has HW6") == "no car has HW6"


def test_hardware_bars_fit_their_panel() -> None:
    store = FleetStore(Topics("t"))
    store.ingest(store.topics.summary, encode(cr.summary(1_000_000, "HW5")))
    for width in (40, 53, 80):
        assert all(len(line) <= width for line in panels.hardware_lines(store, width)), width


def test_a_long_health_line_still_leads_with_read_only_and_reconnects() -> None:
    store = FleetStore(Topics("t"))
    store.link_changed("connected")
    store.link_changed("reconnecting", "refused", 1)
    store.link_changed("connected")
    store.reject("invalid", "x" * 50)
    line = panels.health_line(store, "mqtts://operator@broker.example.org:8883", read_only=True, paused=False)
    assert line.index("READ-ONLY") < 20 and line.index("reconnected 1x") < 40


def test_header_reads_small_fleets_in_fractions_and_shows_what_is_in_use() -> None:
    store = FleetStore(Topics("t"))
    store.ingest(store.topics.summary, encode(cr.summary(100, "HW5")))  # 500 kTOPS, a quarter in use
    assert panels.equivalence_line(store).startswith("= 1.13 Fugakus · 0.41 Frontier · 0.18 El Capitan (peak)")
    assert "in use: 0.28 Fugaku" in panels.equivalence_line(store)
    assert "in use 125.0 kTOPS (33% of what is put up)" in panels.totals_line(store)
    assert panels.faults_line(store).startswith("faults detected: wrong results caught 1")


def test_reliability_reads_as_the_ledgers_score() -> None:
    assert reliability_text(0.875).startswith("88% (the dispatcher ledger's score")
    assert reliability_text(None).startswith("- (")
