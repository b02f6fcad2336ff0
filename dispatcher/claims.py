"""What a car may claim: TOPS within its hardware generation's catalogue figure, the compute power
the model gives for the TOPS it uses, and only its own assignments. Each check returns the reason a
message is refused (counted under it), or None.
"""

from __future__ import annotations

import logging
from collections import Counter

from dispatcher.ledger import Ledger
from dispatcher.records import AssignmentStatus, Attempt
from protocol.job_messages import ShardPreempted, ShardProgress, ShardRefused, ShardResult
from protocol.power import compute_kw
from protocol.vehicle_messages import HARDWARE_TOPS, ComputeOffer, VehicleTelemetry

ShardMessage = ShardProgress | ShardResult | ShardPreempted | ShardRefused
POWER_TOLERANCE = 1.05  # a car's compute power may exceed the model's by 5 % (and by its 4-decimal rounding)
POWER_ROUNDING_KW = 0.0001
SETTLED = ""  # not a refusal: a duplicate or late message about one of the car's own settled assignments
log = logging.getLogger(__name__)


class Refusals:
    """Refused messages and claims by reason: kept in the ledger, those of the current tick pending."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.pending: Counter[str] = Counter()  # written to the ledger once per tick
        self._seen: Counter[str] = Counter()  # since start, to sample the log

    def tally(self, reason: str) -> None:
        """Count a refusal that its caller logs (or that is too frequent to log)."""
        self.pending[reason] += 1

    def count(self, reason: str, what: str, *args: object) -> None:
        """Count a refusal the engine decided (a ledger event counts its own), and log it."""
        self.pending[reason] += 1
        self.log(reason, what, *args)

    def log(self, reason: str, what: str, *args: object) -> None:
        """Log the first ten refusals of a reason, then every thousandth: a flood must not flood the log."""
        self._seen[reason] += 1
        n = self._seen[reason]
        if n <= 10 or n % 1000 == 0:
            log.warning("refused (%s, %d so far) " + what, reason, n, *args)

    def flush(self) -> None:
        if self.pending:
            self.ledger.add_rejections(dict(self.pending))
            self.pending.clear()

    def totals(self) -> Counter[str]:
        """Every refusal by reason: the ledger's, and those not yet written."""
        return Counter(self.ledger.rejections()) + self.pending


def offer_refusal(offer: ComputeOffer, known_hardware: str) -> str | None:
    """Why an offer is refused: more TOPS than its generation has, or another generation than the car's."""
    if offer.free_tops > HARDWARE_TOPS[offer.hardware]:
        return "offer_beyond_catalogue"
    if known_hardware not in ("unknown", offer.hardware):  # a StrEnum member equals its value
        return "offer_hardware_mismatch"
    return None


def telemetry_refusal(telemetry: VehicleTelemetry) -> str | None:
    """Why telemetry is refused: a rating above its generation's, more TOPS in use than rated, or more
    compute power than `protocol.power` gives for its hardware at the TOPS it uses."""
    if telemetry.rated_tops > HARDWARE_TOPS[telemetry.hardware] or telemetry.tops_in_use > telemetry.rated_tops:
        return "telemetry_beyond_catalogue"
    modelled_kw = compute_kw(telemetry.hardware, telemetry.tops_in_use)
    if telemetry.compute_power_kw > modelled_kw * POWER_TOLERANCE + POWER_ROUNDING_KW:
        return "power_beyond_model"
    return None


def shard_refusal(attempt: Attempt | None, vehicle_id: str, message: ShardMessage) -> str | None:
    """Why a shard message is refused; `SETTLED` for the car's own settled assignment, None if it applies."""
    if attempt is None:
        return "unknown_assignment"
    if attempt.vehicle_id != vehicle_id:
        return "not_your_assignment"
    named = None if isinstance(message, ShardRefused) else (message.job_id, message.shard_id)
    if named is not None and named != (attempt.job_id, attempt.shard_id):
        return "assignment_mismatch"
    return None if attempt.status is AssignmentStatus.ACTIVE else SETTLED
