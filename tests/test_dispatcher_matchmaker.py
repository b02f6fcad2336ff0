"""The pure matchmaker and scheduler rules: property tests and the policies."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import jobs
from dispatcher.matchmaker import HW_RANK, Need, Offer, OfferBook, failed_requirement, policy_score
from protocol import HardwareGeneration, MatchPolicy

NOW = 1_000_000.0
HW = list(HardwareGeneration)

offers_st = st.lists(
    st.builds(
        lambda i, hw, tops, price, stay, conf, budget, min_price: Offer(
            vehicle_id=f"car-{i}", offer_id="o", hardware=hw, free_tops=tops, price_per_tops_hour=price,
            offered_at_s=NOW - 10, departure_at_s=NOW + stay, departure_confidence=conf,
            energy_budget_kwh=budget, min_price_per_tops_hour=min_price),
        st.integers(0, 10_000), st.sampled_from(HW), st.floats(1, 30_000), st.floats(0, 1),
        st.floats(-100, 50_000), st.floats(0, 1), st.floats(0, 10), st.floats(0, 0.5)),
    max_size=60, unique_by=lambda o: o.vehicle_id)
needs_st = st.builds(
    Need, min_tops=st.floats(1, 25_000), min_hardware=st.none() | st.sampled_from(HW),
    price_cap=st.none() | st.floats(0, 1), work_tera_ops=st.floats(1, 1e7), checkpoint_interval_s=st.floats(1, 600))


@settings(max_examples=150, deadline=None)
@given(offers=offers_st, need=needs_st, policy=st.sampled_from(list(MatchPolicy)),
       parallel=st.integers(1, 20), excluded=st.sets(st.integers(0, 10_000), max_size=10))
def test_matches_are_eligible_never_overcommitted_never_beyond_parallelism(
    offers: list[Offer], need: Need, policy: MatchPolicy, parallel: int, excluded: set[int]
) -> None:
    book = OfferBook(policy)
    offered = {o.vehicle_id: o.free_tops for o in offers}
    for offer in offers:
        book.put(offer)
    exclude = {f"car-{i}" for i in excluded}
    taken: list[Offer] = []
    while len(taken) < parallel and (offer := book.match(need, NOW, exclude)) is not None:
        taken.append(offer)
    assert len(taken) <= parallel
    assert len({o.vehicle_id for o in taken}) == len(taken), "a car's TOPS were committed twice"
    for offer in taken:
        assert offer.vehicle_id not in exclude
        assert failed_requirement(policy, need, offer, NOW) is None, "an ineligible car was matched"
        assert offer.free_tops <= offered[offer.vehicle_id]
    eligible = [o for o in offers if o.vehicle_id not in exclude and failed_requirement(policy, need, o, NOW) is None]
    assert len(taken) == min(parallel, len(eligible)), "an eligible car was left idle"
    assert abs(book.tops_offered - sum(offered.values()) + sum(o.free_tops for o in taken)) < 1e-3


def make_offer(vid: str, hw: HardwareGeneration, tops: float, price: float, stay: float, soc: float = 0.8) -> Offer:
    return Offer(vehicle_id=vid, offer_id="o", hardware=hw, free_tops=tops, price_per_tops_hour=price,
                 offered_at_s=NOW, departure_at_s=NOW + stay, soc=soc)


def test_each_policy_picks_its_own_best_car() -> None:
    fleet = [
        make_offer("fast", HardwareGeneration.HW6, 20_000, 0.05, 600),
        make_offer("cheap", HardwareGeneration.HW4, 500, 0.001, 600),
        make_offer("stays", HardwareGeneration.HW5, 5_000, 0.03, 20 * 3600),
        make_offer("frugal", HardwareGeneration.HW6, 18_000, 0.04, 600, soc=1.0),
    ]
    need = Need(min_tops=100)
    expected = {MatchPolicy.FASTEST: "fast", MatchPolicy.CHEAPEST: "cheap",
                MatchPolicy.DEPARTURE_AWARE: "stays", MatchPolicy.ENERGY_AWARE: "frugal"}
    book = OfferBook()
    for offer in fleet:
        book.put(offer)
    for policy, winner in expected.items():
        book.set_policy(policy)  # changed at run time, on a live book
        chosen = book.match(need, NOW)
        assert chosen is not None and chosen.vehicle_id == winner, policy
        book.put(chosen)


def test_analysis_counts_cars_failing_each_requirement() -> None:
    book = OfferBook()
    for i in range(30):
        book.put(make_offer(f"hw4-{i}", HardwareGeneration.HW4, 300, 0.01, 3600))
    for i in range(5):
        book.put(make_offer(f"dear-{i}", HardwareGeneration.HW6, 20_000, 0.9, 3600))
    need = Need(min_tops=1_000, min_hardware=HardwareGeneration.HW5, price_cap=0.1)
    assert book.match(need, NOW) is None
    counts, sampled = book.analyze(need, NOW)
    assert not sampled
    assert counts == {"hardware >= HW5": 30, "price <= cap 0.1/TOPS-h": 5}


def test_a_match_looks_at_bucket_heads_not_the_fleet() -> None:
    rng = random.Random(3)
    book = OfferBook(MatchPolicy.CHEAPEST)
    for i in range(20_000):
        hw = rng.choice(HW)
        book.put(make_offer(f"c{i}", hw, rng.uniform(100, 20_000), rng.uniform(0.001, 0.05), 3600))
    calls = 0
    original = failed_requirement

    def counting(*args: object) -> str | None:
        nonlocal calls
        calls += 1
        return original(*args)  # type: ignore[arg-type]

    import dispatcher.matchmaker as mm

    mm.failed_requirement = counting  # type: ignore[assignment]
    try:
        for _ in range(50):
            assert book.match(Need(min_tops=4_000, min_hardware=HardwareGeneration.HW5), NOW) is not None
    finally:
        mm.failed_requirement = original
    assert calls / 50 < len(HW_RANK) * (mm.MAX_LEVEL + 1) + mm.PROBE_BUDGET
    assert calls / 50 < 200  # in practice a handful of non-empty buckets, not 20,000 offers


def test_votes_accept_only_agreement() -> None:
    honest, liar = "a" * 64, "b" * 64
    assert jobs.decide([("x", honest), ("y", honest)], 2, {}, 0, 2).accepted == honest
    split = jobs.decide([("x", honest), ("y", liar)], 2, {}, 0, 2)
    assert split.accepted is None and split.need_another
    settled = jobs.decide([("x", honest), ("y", liar), ("z", honest)], 2, {}, 0, 3)
    assert settled.accepted == honest and settled.wrong_voters == ("y",)
    # redundancy 1: a lone result is trusted only from a proven car
    assert jobs.decide([("new", liar)], 1, {"new": False}, 0, 1).need_another
    assert jobs.decide([("old", honest)], 1, {"old": True}, 0, 1).accepted == honest
    assert jobs.decide([("x", honest), ("y", liar)], 2, {}, 0, 2 + jobs.EXTRA_REPLICAS).give_up


@settings(max_examples=100, deadline=None)
@given(offers=offers_st, policy=st.sampled_from(list(MatchPolicy)), takes=st.integers(1, 30))
def test_matches_come_in_rank_order_and_heaps_stay_heaps(offers: list[Offer], policy: MatchPolicy, takes: int) -> None:
    book = OfferBook(policy)
    for offer in offers:
        book.put(offer)
    need = Need(min_tops=1.0)
    scores = []
    for _ in range(takes):
        chosen = book.match(need, NOW)
        if chosen is None:
            break
        scores.append((policy_score(policy, chosen), chosen.seq))
        for bucket in book._buckets.values():
            assert all(bucket.heap[(i - 1) // 2] <= bucket.heap[i] for i in range(1, len(bucket.heap)))
    assert scores == sorted(scores), "a better car was passed over"
