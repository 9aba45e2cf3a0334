"""The randomization list generator: stratified permuted blocks from a seeded cryptographic
stream, so an auditor holding the seed re-derives the list exactly, on any machine.

The algorithm, exactly:

1. Random stream per stratum. Block `counter` = 0, 1, 2, ... of stratum `S` yields the 32 bytes
   HMAC-SHA256(key = seed as UTF-8, message = f"{S}|{counter}" as UTF-8). The bytes of the
   blocks are concatenated into one stream, read 4 bytes at a time as big-endian unsigned
   integers `u` (0 <= u < 2**32).
2. Unbiased draw of an integer in [0, n): take the next `u`; reject it while
   u >= 2**32 - (2**32 mod n), then answer u mod n.
3. For each block of the stratum: its size is block_sizes[draw(len(block_sizes))]; it holds
   size * ratio / total_ratio copies of each arm, arms in protocol order; it is shuffled by
   Fisher-Yates from the last position down: for i = size-1 .. 1, j = draw(i + 1), swap i and j.
4. Blocks are appended until the stratum has at least N slots; the list keeps the first N
   (the last block may be cut, which is why balance is asserted after complete blocks).

Nothing from one stratum's stream reaches another's, so strata are independent, and the next
allocation cannot be computed from the previous ones without the seed (HMAC is a PRF).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from trialsite.keyed_stream import StratumStream

CSV_HEADER = ["stratum", "sequence", "block", "block_size", "arm"]


@dataclass(frozen=True)
class PlannedSlot:
    stratum: str
    sequence: int
    block: int
    block_size: int
    arm: str


def block_arms(arms: Sequence[tuple[str, int]], size: int) -> list[str]:
    total = sum(ratio for _, ratio in arms)
    if size % total:
        raise ValueError(f"block size {size} is not a multiple of the ratio total {total}")
    return [code for code, ratio in arms for _ in range(size * ratio // total)]


def stratum_slots(
    *, seed: str, stratum: str, size: int, arms: Sequence[tuple[str, int]], block_sizes: Sequence[int]
) -> Iterator[PlannedSlot]:
    stream = StratumStream(seed, stratum)
    sequence = 0
    block = 0
    while sequence < size:
        block += 1
        block_size = block_sizes[stream.below(len(block_sizes))]
        contents = block_arms(arms, block_size)
        for i in range(block_size - 1, 0, -1):
            j = stream.below(i + 1)
            contents[i], contents[j] = contents[j], contents[i]
        for arm in contents:
            if sequence == size:
                return
            sequence += 1
            yield PlannedSlot(stratum, sequence, block, block_size, arm)


def generate(
    *, seed: str, strata: Sequence[str], size: int, arms: Sequence[tuple[str, int]], block_sizes: Sequence[int]
) -> list[PlannedSlot]:
    if not seed:
        raise ValueError("a seed is required")
    return [
        slot
        for stratum in strata
        for slot in stratum_slots(seed=seed, stratum=stratum, size=size, arms=arms, block_sizes=block_sizes)
    ]


def protocol_strata(trial, sites=None) -> list[str]:
    """Every stratum of the trial: site codes crossed with the levels of each configured factor."""
    site_codes = [site.code for site in (sites if sites is not None else trial.sites.order_by("code"))]
    strata = site_codes
    for factor in trial.protocol.randomization.factors:
        strata = [f"{stratum}|{factor.code}={level}" for stratum in strata for level in factor.levels]
    return strata


def stratum_of(participant) -> str:
    """The participant's stratum key: their site, then each factor's level in protocol order."""
    key = participant.site.code
    levels = participant.screening.stratification or {}
    for factor in participant.site.trial.protocol.randomization.factors:
        key += f"|{factor.code}={levels.get(factor.code, '')}"
    return key


def as_csv(slots: Sequence[PlannedSlot]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for slot in slots:
        writer.writerow([slot.stratum, slot.sequence, slot.block, slot.block_size, slot.arm])
    return out.getvalue()


def digest(slots: Sequence[PlannedSlot]) -> str:
    """SHA-256 of the canonical CSV (header, then slots by stratum and sequence)."""
    ordered = sorted(slots, key=lambda slot: (slot.stratum, slot.sequence))
    return hashlib.sha256(as_csv(ordered).encode()).hexdigest()
