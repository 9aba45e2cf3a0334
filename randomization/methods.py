"""The randomization methods a protocol can name (`[randomization] method`), behind one interface.

A method does two things: it sets up a new list version (`plan`), and it allocates one
participant from the trial's active list (`allocate`), creating or filling the `Slot` that
records the arm. Everything else (unblinding, exports, kits, the blind) reads `Slot.arm` and
does not care which method chose it.

- `PermutedBlocks` ("stratified_permuted_blocks"): the list is generated in advance
  (randomization/generator.py); allocation takes the next free slot of the participant's stratum.
- `Minimization` ("minimization"): Pocock and Simon's minimization with a random element. The
  list holds only the secret seed; each allocation is computed when the participant is
  randomized, from the earlier allocations of the list, and stored as a new slot.

Minimization, exactly (what `manage.py randomization_audit` re-derives):

1. Factors: the protocol's `[[randomization.factors]]` with their `weight`, and, when
   `stratify_by_site`, the site as one more factor (weight `site_weight`). The participant's
   levels are those recorded in the slot's stratum key at allocation ("NT|liver=yes").
2. Imbalance. For a candidate arm `a`, suppose the participant were given `a`. For each factor
   `f`, take the participant's level `l` and count the earlier participants of the list with
   level `l` in each arm `k`, plus one for `k = a`; divide each count by the arm's ratio (so a
   2:1 design is balanced when the counts are 2:1); the factor's imbalance is the range
   (max - min) of these ratio-adjusted counts. The range is used rather than the variance: it
   is Pocock and Simon's simplest measure, it is what a reviewer can check by hand from the
   margins table, and with two arms the two measures choose the same arm. The candidate's
   total imbalance is the sum over factors of weight x imbalance, in exact fractions.
3. Choice, with the deterministic random stream of this allocation (below):
   - for the list's first allocation (no earlier one to balance), and whenever every arm has
     the same total, the arm is drawn at random weighted by the ratios;
   - otherwise the preferred arm is drawn among the arms with the smallest total (ties broken at
     random, weighted by ratio); it is taken with probability `probability` (one draw below the
     denominator of `probability` as an exact fraction, compared with its numerator); otherwise
     one of the other arms is drawn, weighted by ratio.
4. Randomness: allocation number `n` (1, 2, ... within the list) reads the stream of
   generator.StratumStream with the list's seed and the stream name f"minimization|{n}", i.e.
   HMAC-SHA256(key = seed, message = f"minimization|{n}|{counter}"), 4-byte big-endian words,
   unbiased draws by rejection. A weighted draw among arms (in protocol order) with ratios
   r1..rk takes u = below(r1 + ... + rk) and answers the first arm whose running ratio total
   exceeds u. Given the seed and the allocation history the arm is fully determined; without the
   seed the next allocation is not predictable beyond the minimization preference itself.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from django.db import connection
from django.db.models import Count, Max
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from randomization import generator
from trialsite.exceptions import Conflict

SITE_FACTOR = "site"
BLOCKS = "stratified_permuted_blocks"
MINIMIZATION = "minimization"


class MinimizationRulesChanged(Conflict):
    default_message = gettext_lazy(
        "The protocol's minimization rules (arms, factors, weights or probability) are not those the active "
        "list was made with; the statistician must make a new list version before anyone is randomized."
    )


class StratumExhausted(Conflict):
    default_message = gettext_lazy(
        "The randomization list has no free slot left for this participant's stratum; "
        "the statistician has been alerted."
    )

    def __init__(self, message=None, *, stratum: str = "", **kwargs):
        super().__init__(message, **kwargs)
        self.stratum = stratum
        # The participant's site, set by the randomization that found the stratum used up.
        self.site = None


def stratum_levels(stratum: str) -> dict[str, str]:
    """The levels an allocation rested on: "NT|liver=yes" -> {"site": "NT", "liver": "yes"}."""
    site_code, *pairs = stratum.split("|")
    levels = {SITE_FACTOR: site_code}
    for pair in pairs:
        code, _, level = pair.partition("=")
        levels[code] = level
    return levels


@dataclass(frozen=True)
class Decision:
    """One minimization allocation and why: the totals per arm, the preferred arm, the draws."""

    arm: str
    totals: dict[str, Fraction]
    preferred: str | None  # None when every arm tied and the arm was drawn by ratio
    took_preferred: bool


class _Draws:
    def __init__(self, seed: str, sequence: int):
        self.stream = generator.StratumStream(seed, f"minimization|{sequence}")

    def by_ratio(self, arms: Sequence[tuple[str, int]]) -> str:
        value = self.stream.below(sum(ratio for _, ratio in arms))
        for code, ratio in arms:
            if value < ratio:
                return code
            value -= ratio
        raise AssertionError("unreachable: the draw is below the ratio total")

    def chance(self, probability: Fraction) -> bool:
        return self.stream.below(probability.denominator) < probability.numerator


def minimization_choice(
    *,
    seed: str,
    sequence: int,
    arms: Sequence[tuple[str, int]],
    weights: Mapping[str, Fraction],
    probability: Fraction,
    levels: Mapping[str, str],
    counts: Mapping[tuple[str, str, str], int],
) -> Decision:
    """The arm of allocation `sequence` (steps 2-4 of the module's description).

    `weights`: factor code -> weight (the site included as SITE_FACTOR when it is a factor);
    `levels`: the participant's level of each factor; `counts`: (factor, level, arm) -> number
    of earlier allocations of the list with that level in that arm."""
    if not seed:
        raise ValueError("a seed is required")
    draws = _Draws(seed, sequence)
    totals = {}
    for candidate, _ratio in arms:
        total = Fraction(0)
        for factor, weight in weights.items():
            level = levels.get(factor, "")
            adjusted = [
                Fraction(counts.get((factor, level, code), 0) + (code == candidate), ratio) for code, ratio in arms
            ]
            total += weight * (max(adjusted) - min(adjusted))
        totals[candidate] = total
    smallest = min(totals.values())
    best = [(code, ratio) for code, ratio in arms if totals[code] == smallest]
    # With no earlier allocation the ratio-adjusted ranges are not equal under unequal ratios
    # (one participant in a 2-share arm counts 1/2), yet there is nothing to balance yet.
    if len(best) == len(arms) or not any(counts.values()):
        return Decision(draws.by_ratio(arms), totals, None, False)
    preferred = draws.by_ratio(best)
    if draws.chance(probability):
        return Decision(preferred, totals, preferred, True)
    return Decision(draws.by_ratio([arm for arm in arms if arm[0] != preferred]), totals, preferred, False)


def minimization_rules(protocol) -> tuple[list[tuple[str, int]], dict[str, Fraction], Fraction]:
    """Arms with ratios (protocol order), factor weights and the probability, from the protocol."""
    spec = protocol.randomization
    weights = {factor.code: Fraction(factor.weight) for factor in spec.factors}
    if spec.stratify_by_site:
        weights = {SITE_FACTOR: Fraction(spec.site_weight), **weights}
    arms = [(arm.code, arm.ratio) for arm in protocol.arms]
    return arms, weights, Fraction(spec.probability)


def replay(*, seed: str, protocol, history: Sequence[str]):
    """Re-derive every allocation of a minimization list: `history` is the stratum key of each
    allocation in order (1, 2, ...). Yields (sequence, Decision), feeding each derived arm back
    into the counts exactly as the allocations did."""
    arms, weights, probability = minimization_rules(protocol)
    counts: Counter = Counter()
    for sequence, stratum in enumerate(history, start=1):
        levels = stratum_levels(stratum)
        decision = minimization_choice(
            seed=seed,
            sequence=sequence,
            arms=arms,
            weights=weights,
            probability=probability,
            levels=levels,
            counts=counts,
        )
        yield sequence, decision
        for factor in weights:
            counts[(factor, levels.get(factor, ""), decision.arm)] += 1


class Method:
    """What a randomization method provides to the services."""

    name: str
    # Whether a new list version is made of slots generated in advance.
    pre_generates_slots: bool

    def __init__(self, trial):
        self.trial = trial
        self.protocol = trial.protocol

    def plan(self, *, seed: str, slots_per_stratum: int | None) -> list[generator.PlannedSlot]:
        """The slots a new list version starts with."""
        raise NotImplementedError

    def rules_digest(self, slots: Sequence[generator.PlannedSlot]) -> str:
        """The SHA-256 recorded on the list."""
        raise NotImplementedError

    def outdated(self, randomization_list) -> str | None:
        """Why the list no longer fits the protocol in force (None when it fits): a list made
        before an amendment changed the arms or their ratio must not be locked and used."""
        raise NotImplementedError

    def allocate(self, *, active, participant, stratum: str):
        """Give `participant` an arm from the locked, active list `active` and return the Slot
        (its allocated_at taken once the allocation's locks are held, so that allocation order
        is time order). Called inside the randomization transaction, the participant locked,
        `active` as `active_list_for_allocation` returned it (with its allocation lock)."""
        raise NotImplementedError


class PermutedBlocks(Method):
    name = BLOCKS
    pre_generates_slots = True

    def plan(self, *, seed, slots_per_stratum):
        return generator.generate(
            seed=seed,
            strata=generator.protocol_strata(self.trial),
            size=slots_per_stratum,
            arms=[(arm.code, arm.ratio) for arm in self.protocol.arms],
            block_sizes=self.protocol.randomization.block_sizes,
        )

    def rules_digest(self, slots):
        return generator.digest(slots)

    def outdated(self, randomization_list):
        """Each block holds the arms in the protocol's ratio for its size (the last block of a
        stratum may stop early, never beyond the ratio), and no arm outside the protocol."""
        from randomization.models import Slot

        arms = [(arm.code, arm.ratio) for arm in self.protocol.arms]
        composition: dict[tuple[str, int], Counter] = {}
        sizes: dict[tuple[str, int], int] = {}
        for row in (
            Slot.objects.filter(randomization_list=randomization_list)
            .order_by()
            .values("stratum", "block", "block_size", "arm__code")
            .annotate(slots=Count("id"))
        ):
            key = (row["stratum"], row["block"])
            composition.setdefault(key, Counter())[row["arm__code"]] = row["slots"]
            sizes[key] = row["block_size"]
        for (stratum, block), counts in sorted(composition.items()):
            try:
                expected = Counter(generator.block_arms(arms, sizes[(stratum, block)]))
            except ValueError:
                return _("stratum %(stratum)s, block %(block)s: its size does not fit the ratio") % {
                    "stratum": stratum,
                    "block": block,
                }
            full = sum(counts.values()) == sizes[(stratum, block)]
            if (full and counts != expected) or any(counts[code] > expected[code] for code in counts):
                return _("stratum %(stratum)s, block %(block)s: its arms are not in the protocol's ratio") % {
                    "stratum": stratum,
                    "block": block,
                }
        return None

    def allocate(self, *, active, participant, stratum):
        from randomization.models import Slot

        # The stratum's advisory lock is held (taken with the list by
        # `active_list_for_allocation`), so this statement's snapshot sees every earlier
        # allocation of the stratum committed: the first free slot is the next in sequence order.
        # It is locked and filled in the one statement, through the partial index of free slots
        # (a read of the first free slot, whatever the length of the list or the number taken).
        columns = [field.column for field in Slot._meta.concrete_fields]
        table = Slot._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET participant_id = %s, allocated_at = %s, protocol_version_id = %s "
                f"WHERE id = (SELECT free.id FROM {table} AS free WHERE free.randomization_list_id = %s "
                "AND free.stratum = %s AND free.participant_id IS NULL ORDER BY free.sequence LIMIT 1 FOR UPDATE) "
                f"RETURNING {', '.join(columns)}",
                # In the same UPDATE as the participant: the locked-list guard allows no later change.
                [participant.pk, timezone.now(), self.trial.current_version_id, active.pk, stratum],
            )
            row = cursor.fetchone()
        if row is None:
            raise StratumExhausted(stratum=stratum)
        slot = Slot.from_db(connection.alias, [field.attname for field in Slot._meta.concrete_fields], row)
        slot.participant = participant
        return slot


class Minimization(Method):
    name = MINIMIZATION
    pre_generates_slots = False

    def plan(self, *, seed, slots_per_stratum):
        # Nothing is generated in advance: each allocation is computed when it is made.
        return []

    def rules_digest(self, slots):
        """SHA-256 of the rules the list allocates by (not the seed: a digest of the seed would
        let a guessed seed be checked offline)."""
        arms, weights, probability = minimization_rules(self.protocol)
        levels = {factor.code: list(factor.levels) for factor in self.protocol.randomization.factors}
        rules = {
            "method": self.name,
            "arms": arms,
            "weights": {code: str(weight) for code, weight in weights.items()},
            "levels": levels,
            "probability": str(probability),
        }
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()

    def outdated(self, randomization_list):
        if self.rules_digest([]) != randomization_list.sha256:
            return _("its minimization rules (arms, factors, weights or probability) are not the protocol's")
        return None

    def allocate(self, *, active, participant, stratum):
        from randomization.models import RandomizationList, Slot

        # One allocation at a time per list (the trial's active list): each one depends on all
        # the earlier ones. The list row's lock is held to the end of the transaction, so the
        # next allocation reads this one's slot.
        locked = RandomizationList.objects.select_for_update().filter(pk=active.pk, is_active=True).first()
        if locked is None:
            # A new version was locked meanwhile; the caller looks again.
            return None
        # The list's SHA-256 fixed the rules; allocating by others would make its history
        # impossible to re-derive (and the audit would report every later allocation).
        if self.rules_digest([]) != locked.sha256:
            raise MinimizationRulesChanged()
        earlier = Slot.objects.filter(randomization_list=locked)
        sequence = (earlier.aggregate(last=Max("sequence"))["last"] or 0) + 1
        arms, weights, probability = minimization_rules(self.protocol)
        counts: Counter = Counter()
        for row in earlier.order_by().values("stratum", "arm__code").annotate(allocations=Count("id")):
            recorded = stratum_levels(row["stratum"])
            for factor in weights:
                counts[(factor, recorded.get(factor, ""), row["arm__code"])] += row["allocations"]
        decision = minimization_choice(
            seed=locked.seed,
            sequence=sequence,
            arms=arms,
            weights=weights,
            probability=probability,
            levels=stratum_levels(stratum),
            counts=counts,
        )
        return Slot.objects.create(
            randomization_list=locked,
            stratum=stratum,
            site=participant.site,
            # The list's allocation number: the same for whatever arm is chosen (a number per
            # arm would tell the arm).
            sequence=sequence,
            block=0,
            block_size=0,
            arm=self.trial.arms.get(code=decision.arm),
            participant=participant,
            allocated_at=timezone.now(),
            protocol_version_id=self.trial.current_version_id,
        )


METHODS = {method.name: method for method in (PermutedBlocks, Minimization)}


def active_list_for_allocation(trial, stratum: str):
    """The trial's active list, or None, read together with the lock its method allocates
    under: for a list generated in advance, a transaction-scoped advisory lock per list and
    stratum (allocations within one stratum are serialized, so slots are taken strictly in
    sequence order even when a transaction rolls back; different strata proceed in parallel).
    Minimization locks the list's row itself (`Minimization.allocate`). One statement; the
    returned list carries only what allocation reads (id, trial, method)."""
    from randomization.models import RandomizationList

    pre_generated = [name for name, method in METHODS.items() if method.pre_generates_slots]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT active.id, active.method, CASE WHEN active.method = ANY(%s) THEN "
            "pg_advisory_xact_lock(hashtext('randomization:' || active.id || ':' || %s)) END "
            f"FROM {RandomizationList._meta.db_table} AS active WHERE active.trial_id = %s AND active.is_active "
            "ORDER BY active.id LIMIT 1",
            [pre_generated, stratum, trial.pk],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return RandomizationList(pk=row[0], trial=trial, method=row[1], is_active=True)


def method_for(trial, name: str | None = None) -> Method:
    """The method of `name` (a list's recorded method), or the trial protocol's."""
    return METHODS[name or trial.protocol.randomization.method](trial)
