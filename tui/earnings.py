"""The owners' money in the control room, as the dispatcher's ledger publishes it: the book and its text.

`EarningsBook` keeps the last retained `EarningsReport` (fleet, per owner mode, top cars and
owners) and the `CarEarnings` of the cars whose topic the app subscribed to (the car in view);
the text functions lay out what the ledger said and compute nothing of their own. Pure (no
Textual): `tui.earningsview` paints it.
"""

from __future__ import annotations

from protocol.owners import ASSUMPTIONS, CAR_PAYMENT, CLAIM_FREE_MOBILITY, CarEarnings, CarMoney, EarningsReport, Money

TOP_SHOWN = 15


class EarningsBook:
    """The ledger's earnings heard on the wire."""

    def __init__(self) -> None:
        self.report: EarningsReport | None = None
        self.cars: dict[str, CarMoney] = {}  # the cars whose own figures were heard
        self.watched: set[str] = set()  # cars drilled into: the app subscribes to their figures
        self.version = 0

    def apply(self, message: EarningsReport | CarEarnings) -> list[CarMoney]:
        """Keep a report or a car's figures; returns the cars whose figures it carries."""
        self.version += 1
        if isinstance(message, EarningsReport):
            self.report = message
            return list(message.top_cars)
        self.cars[message.car.vehicle_id] = message.car
        return [message.car]

    def car(self, vehicle_id: str) -> CarMoney | None:
        """A car's ledger figures: its own message if heard, else its line in the report's top cars."""
        own = self.cars.get(vehicle_id)
        if own is not None or self.report is None:
            return own
        return next((c for c in self.report.top_cars if c.vehicle_id == vehicle_id), None)


def money_line(money: Money, currency: str = "USD") -> str:
    """Gross (compute + robotaxi), energy cost and net, in one line."""
    return (f"gross {money.gross:,.2f} (compute {money.compute_gross:,.2f} + robotaxi {money.robotaxi_gross:,.2f}, "
            f"{money.robotaxi_trips:,} trips)   energy cost {money.energy_cost:,.2f}   net {money.net:,.2f} {currency}")


def car_money_lines(book: EarningsBook, vehicle_id: str) -> list[str]:
    """The drill-down's money lines for one car, from the ledger."""
    car = book.car(vehicle_id)
    if car is None:
        return ["ledger: nothing booked for this car yet (or no earnings heard from the dispatcher)"]
    return [f"ledger: owner {car.owner_id}   owner mode {car.owner_mode.value}",
            f"ledger: {money_line(car.money)}"]


def earnings_lines(book: EarningsBook) -> list[str]:
    """The earnings view: fleet, the side-by-side of owner modes, top owners and cars, assumptions."""
    report = book.report
    if report is None:
        return ["no earnings heard yet: the dispatcher publishes the ledger's every few seconds"]
    cur = report.currency
    lines = [f"fleet (ledger): {report.cars:,} cars, {report.owners:,} owners   {money_line(report.fleet, cur)}", "",
             f"per owner mode, per car (simulated days)   vs an assumed car payment of "
             f"{report.car_payment_per_month:,.0f} {cur}/month",
             f"  {'MODE':<9}{'CARS':>7}{'CAR-DAYS':>10}{'NET':>11}{'NET/DAY':>10}{'NET/MONTH':>11}{'OF PAYMENT':>12}"]
    for mode in report.by_mode:
        known = mode.car_days > 0
        per = (f"{mode.net_per_car_day:>10,.2f}{mode.net_per_car_month:>11,.2f}{mode.payment_share:>12.0%}" if known
               else f"{'-':>10}{'-':>11}{'-':>12}")
        lines.append(f"  {mode.owner_mode.value:<9}{mode.cars:>7,}{mode.car_days:>10,.2f}{mode.money.net:>11,.2f}{per}")
    lines += [f"  {CLAIM_FREE_MOBILITY}; model: OF PAYMENT = net per car-month / {CAR_PAYMENT.value:,.0f} {cur}", "",
              f"top owners by net (of {report.owners:,})"]
    lines += [f"  {o.owner_id:<18}{o.cars:>5,} cars  {money_line(o.money, cur)}" for o in report.top_owners[:TOP_SHOWN]]
    lines += ["", f"top cars by net (of {report.cars:,})"]
    lines += [f"  {c.vehicle_id:<18}{c.owner_mode.value:<9} {money_line(c.money, cur)}"
              for c in report.top_cars[:TOP_SHOWN]]
    lines += ["", "assumptions of the money model:"]
    return lines + [f"  {a.name} = {a.value:g} {a.unit} ({a.source})" for a in ASSUMPTIONS]
