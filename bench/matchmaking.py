"""Matchmaking cost at 10k, 100k and 1M standing offers, against a naive scan in the same run.

Each decision matches one shard of a random job (TOPS floor, hardware floor, price cap) under
the policy in force, takes the chosen offer out of the book and puts a fresh offer of the same
generation in (churn), so the book keeps its size and mix. The naive reference scans every
offer for the best eligible one.

    python bench/matchmaking.py           # 20,000 decisions per size, 20 naive scans
    python bench/matchmaking.py --quick   # fewer, under a minute

Last line: `matchmaking: <us> us/decision at 1M offers; ratio <1M/10k> vs 10k offers ...`.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.matchmaker import Need, Offer, OfferBook, failed_requirement, policy_score
from protocol import HardwareGeneration, MatchPolicy

NOW = 1_800_000_000.0
RATED = {HardwareGeneration.HW3: 144.0, HardwareGeneration.HW4: 500.0,
         HardwareGeneration.HW5: 5_000.0, HardwareGeneration.HW6: 20_000.0}
MIX = [HardwareGeneration.HW3] * 1 + [HardwareGeneration.HW4] * 4 + [HardwareGeneration.HW5] * 4 + \
      [HardwareGeneration.HW6] * 1
NEEDS = [
    Need(min_tops=100.0),
    Need(min_tops=1_000.0, price_cap=0.04),
    Need(min_tops=3_000.0, min_hardware=HardwareGeneration.HW5),
    Need(min_tops=10_000.0, min_hardware=HardwareGeneration.HW6, price_cap=0.05),
]


def random_offer(rng: random.Random, i: int, hw: HardwareGeneration | None = None) -> Offer:
    hw = hw or rng.choice(MIX)
    return Offer(
        vehicle_id=f"car-{i}", offer_id="o", hardware=hw, free_tops=RATED[hw] * rng.uniform(0.3, 1.0),
        price_per_tops_hour=rng.uniform(0.005, 0.06), offered_at_s=NOW - 60,
        departure_at_s=NOW + rng.uniform(600, 12 * 3600), departure_confidence=rng.uniform(0.3, 1.0),
        soc=rng.uniform(0.2, 1.0),
    )


def naive_match(offers: dict[str, Offer], policy: MatchPolicy, need: Need) -> Offer | None:
    """The reference: look at every offer."""
    best: Offer | None = None
    best_score = 0.0
    for offer in offers.values():
        if failed_requirement(policy, need, offer, NOW) is None:
            score = policy_score(policy, offer)
            if best is None or score < best_score:
                best, best_score = offer, score
    return best


def measure(size: int, decisions: int, naive_decisions: int, policy: MatchPolicy) -> tuple[float, float, float]:
    """(us per decision, build seconds, naive us per decision) at `size` offers."""
    rng = random.Random(size)
    book = OfferBook(policy)
    started = time.perf_counter()
    for i in range(size):
        book.put(random_offer(rng, i))
    build_s = time.perf_counter() - started
    next_id = size
    spent = 0.0
    for d in range(decisions):
        need = NEEDS[d % len(NEEDS)]
        t0 = time.perf_counter()
        chosen = book.match(need, NOW)
        spent += time.perf_counter() - t0
        if chosen is None:
            continue  # the fleet has no such car left: still a decision, and it must be cheap too
        book.put(random_offer(rng, next_id, chosen.hardware))  # another car of the kind just taken
        next_id += 1
    t0 = time.perf_counter()
    for d in range(naive_decisions):
        naive_match(book.offers, policy, NEEDS[d % len(NEEDS)])
    naive = (time.perf_counter() - t0) / naive_decisions * 1e6
    return spent / decisions * 1e6, build_s, naive


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer decisions, under a minute")
    parser.add_argument("--policy", choices=[p.value for p in MatchPolicy], default=MatchPolicy.FASTEST.value)
    args = parser.parse_args()
    decisions, naive = (4_000, 4) if args.quick else (20_000, 20)
    policy = MatchPolicy(args.policy)
    results: dict[int, tuple[float, float, float]] = {}
    print(f"policy {policy.value}; {decisions} decisions per size (match + churn), {naive} naive scans")
    print(f"{'offers':>10} {'us/decision':>12} {'assign/s':>10} {'build s':>8} {'naive us':>12} {'naive/ours':>10}")
    for size in (10_000, 100_000, 1_000_000):
        gc.collect()
        per, build, naive_us = measure(size, decisions, naive, policy)
        results[size] = (per, build, naive_us)
        print(f"{size:>10,} {per:>12.1f} {1e6 / per:>10,.0f} {build:>8.1f} {naive_us:>12,.0f} {naive_us / per:>10,.0f}")
    per_1m, _, naive_1m = results[1_000_000]
    ratio = per_1m / results[10_000][0]
    print(f"matchmaking: {per_1m:.1f} us/decision at 1M offers; ratio {ratio:.2f} vs 10k offers "
          f"(target <= 2; naive scan at 1M: {naive_1m:,.0f} us/decision, {naive_1m / per_1m:,.0f}x slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
