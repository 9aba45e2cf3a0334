"""Kit lists whose numbers say nothing about content, and the checks an imported list must pass.

The generator, exactly (an auditor holding the seed re-derives the list with
`manage.py kit_list`):

1. Random stream: the randomization list's HMAC-SHA256 stream (`randomization.generator.
   StratumStream`) keyed by the seed, with the stream name `kits|<packaging lot>|<kit type>`.
2. Numbers: for each kit type in protocol order, draw 8-digit numbers uniformly from
   [10000000, 99999999] with the stream's unbiased draw, skipping any number already drawn for
   this list, until the type has its count. Sort them ascending.
3. Contents: walk the sorted numbers in blocks whose size is drawn from those of `BLOCK_SIZES`
   that fit in what is left (when none fits, one block of what is left); each block holds the
   same number of each content (an odd last kit takes a content drawn at random) and is shuffled
   by Fisher-Yates (as the randomization list's blocks are). So every type's list is balanced to
   within one kit.

So along the number line the contents are balanced within every few kits, a range of numbers
holds both contents, and the order of numbers carries no trend; the numbers themselves are
random, so neighbours in a site's stock are rarely neighbours in the list.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import itertools
import math
import re
from collections.abc import Iterable, Sequence

from trialsite.keyed_stream import StratumStream

CONTENTS = ("active", "placebo")
BLOCK_SIZES = (4, 8)
NUMBER_LOW, NUMBER_HIGH = 10_000_000, 99_999_999
CSV_HEADER = ["kit_number", "kit_type", "content", "lot", "expiry", "packaging_lot"]

# An imported list is refused when a test says its numbers and contents are related with
# p < 0.001 (|z| > 3.29), and warned about at p < 0.01 (|z| > 2.58).
REFUSE_Z = 3.29
WARN_Z = 2.58


@dataclasses.dataclass(frozen=True)
class PlannedKit:
    kit_number: str
    kit_type: str
    content: str
    lot: str
    expiry: datetime.date
    packaging_lot: str


def generate(
    *,
    seed: str,
    packaging_lot: str,
    kits_per_type: int,
    lots: dict[tuple[str, str], tuple[str, datetime.date]],
    kit_types: Sequence[str],
    contents_by_type: dict[str, Sequence[str]] | None = None,
) -> list[PlannedKit]:
    """The kit list of one packaging lot: `kits_per_type` kits of each type, contents balanced in
    random blocks along the number line. `lots` maps (kit type, content) to the manufacturing
    lot and its true expiry. `contents_by_type` names the contents a type comes in (both, unless
    an open-label trial has active kits only)."""
    if kits_per_type < 1:
        raise ValueError("kits_per_type must be positive")
    drawn: set[int] = set()
    planned: list[PlannedKit] = []
    for kit_type in kit_types:
        stream = StratumStream(seed, f"kits|{packaging_lot}|{kit_type}")
        numbers: list[int] = []
        while len(numbers) < kits_per_type:
            number = NUMBER_LOW + stream.below(NUMBER_HIGH - NUMBER_LOW + 1)
            if number not in drawn:
                drawn.add(number)
                numbers.append(number)
        numbers.sort()
        kinds = tuple(sorted((contents_by_type or {}).get(kit_type, CONTENTS))) or CONTENTS
        contents: list[str] = []
        while len(contents) < kits_per_type:
            remaining = kits_per_type - len(contents)
            sizes = [size for size in BLOCK_SIZES if size <= remaining] or [remaining]
            size = sizes[stream.below(len(sizes))]
            # An odd last block of one kit takes a random content; every other block is balanced.
            block = [content for content in kinds for _ in range(size // len(kinds))]
            while len(block) < size:
                block.append(kinds[stream.below(len(kinds))])
            for i in range(len(block) - 1, 0, -1):
                j = stream.below(i + 1)
                block[i], block[j] = block[j], block[i]
            contents.extend(block)
        for number, content in zip(numbers, contents, strict=False):
            lot, expiry = lots[(kit_type, content)]
            planned.append(PlannedKit(str(number), kit_type, content, lot, expiry, packaging_lot))
    return sorted(planned, key=lambda kit: number_key(kit.kit_number))


def to_csv(kits: Iterable[PlannedKit]) -> str:
    """The canonical CSV (the import format), in kit-number order; its SHA-256 is the list's."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for kit in sorted(kits, key=lambda kit: number_key(kit.kit_number)):
        writer.writerow([kit.kit_number, kit.kit_type, kit.content, kit.lot, kit.expiry.isoformat(), kit.packaging_lot])
    return out.getvalue()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_PARTS = re.compile(r"(\d+)")


def number_key(kit_number: str) -> tuple:
    """Natural order of kit numbers ("K-9" before "K-10"), the order a person reading labels sees."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in _PARTS.split(kit_number) if part != ""
    )


# --- Checks of an imported list ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Finding:
    kit_type: str
    test: str
    z: float

    @property
    def refused(self) -> bool:
        return abs(self.z) > REFUSE_Z

    @property
    def p(self) -> float:
        return math.erfc(abs(self.z) / math.sqrt(2))


def rank_sum_z(contents: Sequence[str]) -> float:
    """Mann-Whitney U of the kit-number ranks of active against placebo kits, as a z score: far
    from 0 when one content sits at the low or the high end of the numbers."""
    n1 = sum(1 for content in contents if content == CONTENTS[0])
    n2 = len(contents) - n1
    if n1 == 0 or n2 == 0:
        return 0.0
    rank_sum = sum(rank for rank, content in enumerate(contents, start=1) if content == CONTENTS[0])
    u = rank_sum - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    sd = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return (u - mean) / sd


def runs_z(contents: Sequence[str]) -> float:
    """Wald-Wolfowitz runs test along the numbers, as a z score: strongly negative when the
    contents come in long runs (1001-1008 all active), strongly positive when they alternate."""
    n1 = sum(1 for content in contents if content == CONTENTS[0])
    n2 = len(contents) - n1
    n = n1 + n2
    if n1 == 0 or n2 == 0 or n < 3:
        return 0.0
    runs = 1 + sum(1 for a, b in itertools.pairwise(contents) if a != b)
    mean = 2 * n1 * n2 / n + 1
    variance = 2 * n1 * n2 * (2 * n1 * n2 - n) / (n * n * (n - 1))
    if variance <= 0:
        return 0.0
    return (runs - mean) / math.sqrt(variance)


def last_digit_z(numbers: Sequence[str], contents: Sequence[str]) -> float:
    """Is the content predictable from whether the number ends in an even or odd digit? A
    two-proportion z score (0 when the numbers do not end in digits)."""
    groups: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
    for number, content in zip(numbers, contents, strict=True):
        if not number[-1:].isdigit():
            return 0.0
        groups[int(number[-1]) % 2 == 0][content == CONTENTS[0]] += 1
    (even_placebo, even_active), (odd_placebo, odd_active) = groups[True], groups[False]
    even, odd = even_placebo + even_active, odd_placebo + odd_active
    if even == 0 or odd == 0:
        return 0.0
    pooled = (even_active + odd_active) / (even + odd)
    sd = math.sqrt(pooled * (1 - pooled) * (1 / even + 1 / odd))
    if sd == 0:
        return 0.0
    return (even_active / even - odd_active / odd) / sd


def order_findings(kits: Iterable[PlannedKit]) -> list[Finding]:
    """For each kit type, how far the content is from independent of the kit number: a trend
    (rank sum), clustering or alternation (runs), parity of the last digit."""
    by_type: dict[str, list[PlannedKit]] = {}
    for kit in kits:
        by_type.setdefault(kit.kit_type, []).append(kit)
    findings = []
    for kit_type, typed in sorted(by_type.items()):
        typed.sort(key=lambda kit: number_key(kit.kit_number))
        contents = [kit.content for kit in typed]
        numbers = [kit.kit_number for kit in typed]
        findings += [
            Finding(kit_type, "rank sum of kit numbers by content", rank_sum_z(contents)),
            # One-sided: more runs than chance is what balanced blocks produce; strict alternation
            # (ABAB on consecutive numbers) is caught by the last-digit test.
            Finding(kit_type, "runs of one content along the kit numbers", min(runs_z(contents), 0.0)),
            Finding(kit_type, "content by even or odd last digit", last_digit_z(numbers, contents)),
        ]
    return findings


# Within one packaging lot and kit type, the contents' counts may differ by at most this many
# kits: otherwise the packaging lot printed on a kit would make one content more likely.
PACKAGING_LOT_IMBALANCE = 2


def packaging_lot_problems(kits: Iterable[PlannedKit]) -> list[tuple[str, str, dict[str, int]]]:
    """(packaging lot, kit type, counts per content) of every packaging lot whose contents are not
    balanced within PACKAGING_LOT_IMBALANCE (including a lot holding one content only)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for kit in kits:
        per_content = counts.setdefault((kit.packaging_lot, kit.kit_type), dict.fromkeys(CONTENTS, 0))
        per_content[kit.content] += 1
    return [
        (packaging_lot, kit_type, per_content)
        for (packaging_lot, kit_type), per_content in sorted(counts.items())
        if max(per_content.values()) - min(per_content.values()) > PACKAGING_LOT_IMBALANCE
    ]
