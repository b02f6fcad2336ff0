"""Pseudonymous vehicle ids and the partition of a fleet's global index space between processes.

A car's id is `car-` and 10 hex characters: a keyed permutation (a Feistel network over 40
bits) of its global index, so ids never collide, never look like a VIN, and cannot be turned
back into the index without the seed.
"""

from __future__ import annotations

import hashlib
import math
import re

ID_BITS = 40
_HALF = ID_BITS // 2
_MASK = (1 << _HALF) - 1
_ROUNDS = 4


class ShardSpecError(ValueError):
    """A `--shard i/n` value that cannot be used."""


def _round(seed: int, rnd: int, half: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{rnd}:{half}".encode(), digest_size=4).digest()
    return int.from_bytes(digest) & _MASK


def vehicle_id(seed: int, index: int) -> str:
    """The id of the car with global `index` in the fleet of `seed`."""
    if not 0 <= index < (1 << ID_BITS):
        raise ValueError(f"global index {index} out of range")
    left, right = index >> _HALF, index & _MASK
    for rnd in range(_ROUNDS):
        left, right = right, left ^ _round(seed, rnd, right)
    return f"car-{(left << _HALF) | right:010x}"


def car_seed(seed: int, index: int) -> int:
    """The private random seed of one car, independent of which process runs it."""
    digest = hashlib.blake2b(f"car:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 2


def gateway_id(seed: int, shard_index: int, shard_count: int) -> str:
    """The user name a fleet process logs in as (and names its process status after)."""
    return f"gw-{seed}-{shard_index}-{shard_count}"


_GATEWAY_ID = re.compile(r"gw-(-?\d+)-(\d+)-(\d+)")


def parse_gateway_id(name: str) -> tuple[int, int, int] | None:
    """(seed, shard index, shard count) of a name `gateway_id` gives, or None for any other name."""
    match = _GATEWAY_ID.fullmatch(name)
    if match is None:
        return None
    seed, index, count = (int(part) for part in match.groups())
    return (seed, index, count) if 0 <= index < count else None


def shares_cars(a: str, b: str) -> bool:
    """True if the fleet processes named `a` and `b` run some of the same cars (same seed, shards meeting).

    Shard i of n runs the global indices congruent to i mod n; two such classes meet exactly when
    i and j are congruent modulo gcd(n, m) (the Chinese remainder theorem).
    """
    if a == b:
        return True
    pa, pb = parse_gateway_id(a), parse_gateway_id(b)
    if pa is None or pb is None or pa[0] != pb[0]:
        return False
    return (pa[1] - pb[1]) % math.gcd(pa[2], pb[2]) == 0


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `i/n` with 0 <= i < n."""
    left, sep, right = text.partition("/")
    try:
        index, count = int(left), int(right)
    except ValueError:
        raise ShardSpecError(f"bad --shard {text!r}: expected i/n, e.g. 0/4") from None
    if not sep or count < 1 or not 0 <= index < count:
        raise ShardSpecError(f"bad --shard {text!r}: need 0 <= i < n")
    return index, count


def owned_indices(start: int, stop: int, shard_index: int, shard_count: int) -> range:
    """The global indices in [start, stop) that process `shard_index` of `shard_count` runs."""
    first = start + (shard_index - start) % shard_count
    return range(first, stop, shard_count)
