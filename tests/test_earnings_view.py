"""The earnings tab in a Textual pilot: the ledger's report as the control room shows it, and the EARNED column."""

from __future__ import annotations

from mqttlink.url import parse_broker_url
from protocol import OwnerMode, Topics, encode, utc_now
from protocol.owners import CarMoney, EarningsReport, ModeMoney, Money, OwnerMoney
from tests.support import control_room as cr
from tests.support.waiting import wait_until
from tui.app import FleetroomApp
from tui.earningsview import EarningsView

TOPICS = Topics("earnview")


def _report() -> EarningsReport:
    car = Money(compute_gross=0.13, robotaxi_gross=33.8, energy_cost=1.2, net=32.73, robotaxi_trips=4)
    modes = [ModeMoney(owner_mode=OwnerMode.ROBOTAXI, cars=1, car_days=1.0, money=car, net_per_car_day=32.73,
                       net_per_car_month=981.9, payment_share=1.3269),
             ModeMoney(owner_mode=OwnerMode.NONE, cars=0, car_days=0.0, money=Money(), net_per_car_day=0.0,
                       net_per_car_month=0.0, payment_share=0.0)]
    return EarningsReport(sender="dispatcher", sent_at=utc_now(), sim_time=utc_now(), fleet=car, cars=1, owners=1,
                          by_mode=modes, top_cars=[CarMoney(vehicle_id="car-a", owner_id="owner-07",
                                                            owner_mode=OwnerMode.ROBOTAXI, money=car)],
                          top_owners=[OwnerMoney(owner_id="owner-07", cars=1, money=car)])


async def test_the_earnings_tab_shows_the_ledgers_report_and_the_earned_column_follows_it() -> None:
    app = FleetroomApp(parse_broker_url("mqtt://127.0.0.1:1"), TOPICS, connect=False, refresh_s=0.05)
    async with app.run_test(size=(160, 48)) as pilot:
        app.store.ingest(TOPICS.telemetry("car-a"), encode(cr.telemetry("car-a", earned=0.13)))
        await pilot.pause()
        assert app.store.cars["car-a"].earned is None  # the car's own count is not shown
        app.store.ingest(TOPICS.earnings, encode(_report()))
        await pilot.press("e")
        view = app.query_one(EarningsView)
        await wait_until(lambda: "fleet (ledger)" in str(view.render()), what="the earnings tab")
        text = str(view.render())
        assert "gross 33.93 (compute 0.13 + robotaxi 33.80, 4 trips)   energy cost 1.20   net 32.73 USD" in text
        robotaxi_row = next(line for line in text.splitlines() if line.strip().startswith("robotaxi"))
        assert robotaxi_row.split()[-3:] == ["32.73", "981.90", "133%"]
        assert next(line for line in text.splitlines() if line.strip().startswith("none")).split()[-1] == "-"
        assert "claim (essay)" in text and "car_payment = 740 USD per month" in text
        assert app.store.cars["car-a"].earned == 33.93  # the EARNED column: the ledger's gross

