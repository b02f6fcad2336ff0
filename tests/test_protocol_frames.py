"""Gateway frames: the contract (rosters, offer frames) and who may write them, on both brokers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from protocol import ProtocolError, Topics, decode_on, encode
from protocol.base import FRAME_MAX_BYTES, MAX_PAYLOAD_BYTES, HardwareGeneration
from protocol.frames import (
    OFFER_FRAME_MAX,
    ROSTER_BLOCK,
    CarRoster,
    OfferFrame,
    RosterEntry,
    decode_frame,
    roster_blocks,
)
from protocol.topics import DELIVERY, Channel
from protocol.vehicle_messages import ComputeOffer, Liveness
from tests.support.brokers import TestBroker
from tests.support.mosquitto_clients import mosquitto_pub, mosquitto_sub
from tests.support.samples import T0, env
from tests.support.waiting import wait_until

T = Topics()


def roster(cars: int, gateway: str = "gw-0", block: int = 0) -> CarRoster:
    return CarRoster(**env(gateway), block=block, cars=[
        RosterEntry(vehicle_id=f"car-{block}x{i}", state=Liveness.ONLINE, hardware=HardwareGeneration.HW5,
                    owner_id="owner-01" if i % 10 == 0 else None, reason="joined") for i in range(cars)])


def offer(vid: str, n: int) -> ComputeOffer:
    return ComputeOffer(**env(vid), offer_id=f"off-{n}", hardware=HardwareGeneration.HW5, free_tops=5000.0,
                        energy_budget_kwh=12.5, expected_departure=T0 + timedelta(hours=8),
                        departure_confidence=0.75, price_per_tops_hour=0.0004, soc=0.81, region="sf-bay",
                        pack_temp_c=24.5)


def test_a_full_roster_and_a_full_offer_frame_fit_the_frame_cap_but_not_the_message_cap() -> None:
    full_roster = encode(roster(ROSTER_BLOCK))
    frame = encode(OfferFrame(**env("gw-0"), seq=1, offers=[offer(f"car-{i:010d}", i) for i in range(OFFER_FRAME_MAX)]))
    assert len(full_roster) < FRAME_MAX_BYTES and len(frame) < FRAME_MAX_BYTES
    assert len(frame) > MAX_PAYLOAD_BYTES  # why frames have their own cap
    info, _ = decode_on(T, T.offer_frames("gw-0"), frame)
    assert info.channel is Channel.OFFER_FRAME and info.client_id == "gw-0"
    assert decode_frame(Channel.ROSTER, full_roster) == roster(ROSTER_BLOCK)


def test_frames_are_refused_when_they_lie_about_their_topic_or_break_the_rules() -> None:
    good = encode(roster(3, block=2))
    with pytest.raises(ProtocolError, match="sender_mismatch"):  # gw-0's roster on gw-1's topic
        decode_on(T, T.roster("gw-1", 2), good)
    with pytest.raises(ProtocolError, match="topic_mismatch"):  # block 2 on block 5's topic
        decode_on(T, T.roster("gw-0", 5), good)
    twice = good.replace(b'"car-2x1"', b'"car-2x0"')
    with pytest.raises(ProtocolError, match="listed twice"):
        decode_frame(Channel.ROSTER, twice)
    with pytest.raises(ProtocolError, match="oversized"):
        decode_frame(Channel.OFFER_FRAME, b" " * (FRAME_MAX_BYTES + 1))
    with pytest.raises(ProtocolError, match="invalid"):  # too many cars for one block
        extra = b'"cars":[{"vehicle_id":"car-extra","state":"online"},'
        decode_frame(Channel.ROSTER, encode(roster(ROSTER_BLOCK)).replace(b'"cars":[', extra))
    with pytest.raises(ProtocolError, match="wrong_channel"):
        decode_frame(Channel.TELEMETRY, good)
    with pytest.raises(ProtocolError, match="unknown_topic"):
        decode_on(T, f"{T.root}/gateways/gw-0/roster/-1", good)


def test_the_topic_map_and_delivery_of_frames() -> None:
    assert T.parse(T.roster("gw-0", 12)).block == 12
    assert DELIVERY[Channel.ROSTER].retain and DELIVERY[Channel.ROSTER].qos == 1
    assert not DELIVERY[Channel.OFFER_FRAME].retain and DELIVERY[Channel.OFFER_FRAME].qos == 1
    assert roster_blocks(0) == 0 and roster_blocks(1) == 1 and roster_blocks(1_000_000) == 2_000


async def test_a_gateway_writes_only_its_own_frames_on_both_brokers(secure_broker: TestBroker) -> None:
    """mosquitto_pub as gateway gw-1 (a real login) tries gw-0's rosters and offers; only its own arrive."""
    topics = secure_broker.topics
    mine, theirs = encode(roster(2, "gw-1")), encode(roster(2, "gw-0"))
    async with mosquitto_sub(secure_broker, "observer", f"{topics.root}/gateways/#") as witness:
        forged = theirs.decode()
        await mosquitto_pub(secure_broker, "gw-1", "-t", topics.roster("gw-0", 0), "-m", forged, "-r", "-q", "1")
        await mosquitto_pub(secure_broker, "gw-1", "-t", topics.offer_frames("gw-0"), "-m", "forged", "-q", "1")
        await mosquitto_pub(secure_broker, "car-0x1", "-t", topics.roster("car-0x1", 0), "-m", "forged", "-q", "1")
        await mosquitto_pub(secure_broker, "gw-1", "-t", topics.roster("gw-1", 0), "-m", mine.decode(), "-r", "-q", "1")
        await wait_until(lambda: witness.got(topics.roster("gw-1", 0), mine.decode()), what="gw-1's own roster")
        assert witness.under(f"{topics.root}/gateways/gw-0") == []
        assert witness.under(f"{topics.root}/gateways/car-0x1") == []
