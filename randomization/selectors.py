"""The only reads of allocation. Everything that may show an arm goes through `arm_for`."""

from __future__ import annotations

from enrollment.models import Participant
from randomization.models import Slot
from trialsite import access
from trialsite.access import Capability
from trialsite.models import Arm


def may_see_arm(user, participant: Participant) -> bool:
    """Users who may view allocation at the participant's site, and a user who broke the blind
    for this participant in an emergency (for this participant only)."""
    if access.can(user, Capability.VIEW_ALLOCATION, participant.site_id):
        return True
    return participant.unblindings.filter(unblinded_by=user).exists()


def arm_for(user, participant: Participant) -> Arm | None:
    """The participant's arm if `user` may see it, else None."""
    if not may_see_arm(user, participant):
        return None
    return allocated_arm(participant)


def allocated_arm(participant: Participant) -> Arm | None:
    """The arm, for the system's own use (choosing kit contents). Never render its result for
    a user: use `arm_for`."""
    slot = Slot.objects.filter(participant=participant).select_related("arm").first()
    return slot.arm if slot else None


def lists_for(user):
    """Lists of the trials where the user manages randomization, newest first."""
    from randomization.models import RandomizationList

    site_ids = access.site_ids_with(user, Capability.MANAGE_RANDOMIZATION)
    return (
        RandomizationList.objects.filter(trial__sites__in=site_ids)
        .distinct()
        .select_related("trial", "created_by", "locked_by")
        .order_by("trial", "-version")
    )


def balance(randomization_list) -> list[dict]:
    """Per stratum: slots, used, free and allocations per arm (unblinded users only)."""
    from django.db.models import Count, Q

    rows = (
        Slot.objects.filter(randomization_list=randomization_list)
        .values("stratum", "arm__code")
        .annotate(slots=Count("id"), used=Count("id", filter=Q(participant__isnull=False)))
        .order_by("stratum", "arm__code")
    )
    strata: dict[str, dict] = {}
    for row in rows:
        stratum = strata.setdefault(row["stratum"], {"stratum": row["stratum"], "slots": 0, "used": 0, "arms": {}})
        stratum["slots"] += row["slots"]
        stratum["used"] += row["used"]
        stratum["arms"][row["arm__code"]] = {"slots": row["slots"], "used": row["used"]}
    for stratum in strata.values():
        stratum["free"] = stratum["slots"] - stratum["used"]
    return list(strata.values())


def randomization_basis(participant: Participant) -> dict:
    """What an allocation of this participant would rest on, for the confirmation step: the
    site, the stratification factors, the eligibility verdict and the PI's signature. Nothing
    here depends on the list or on an arm."""
    from randomization.services import signature_required

    trial = participant.site.trial
    levels = participant.screening.stratification or {}
    signature = participant.eligibility_signature
    return {
        "site": participant.site,
        "factors": [(factor.label, levels.get(factor.code, "")) for factor in trial.protocol.randomization.factors],
        "verdict": participant.screening.get_outcome_display(),
        "eligible": participant.screening.outcome == "eligible",
        "signature": signature,
        "signer": (signature.signer.get_full_name() or signature.signer.get_username()) if signature else "",
        "signature_required": signature_required(trial),
    }


def margins(randomization_list) -> list[dict]:
    """Per minimization factor and level (the site included when it is a factor): allocations
    in all and per arm, as recorded in the slots' stratum keys. What minimization balances;
    the per-arm counts are for unblinded users only, like `balance`."""
    from collections import Counter

    from django.db.models import Count
    from django.utils.translation import get_language
    from django.utils.translation import gettext as _

    from randomization import methods

    protocol = randomization_list.trial.protocol
    _arms, weights, _probability = methods.minimization_rules(protocol)
    chinese = (get_language() or "").startswith("zh")
    labels = {methods.SITE_FACTOR: _("Site")}
    for spec in protocol.randomization.factors:
        labels[spec.code] = (spec.label_zh if chinese else None) or spec.label
    per_arm: Counter = Counter()
    totals: Counter = Counter()
    rows = (
        Slot.objects.filter(randomization_list=randomization_list, participant__isnull=False)
        .order_by()
        .values("stratum", "arm__code")
        .annotate(allocations=Count("id"))
    )
    for row in rows:
        levels = methods.stratum_levels(row["stratum"])
        for factor in weights:
            per_arm[(factor, levels.get(factor, ""), row["arm__code"])] += row["allocations"]
            totals[(factor, levels.get(factor, ""))] += row["allocations"]
    return [
        {
            "factor": factor,
            "factor_label": labels.get(factor, factor),
            "level": level,
            "allocations": count,
            "arms": {arm: allocations for (f, lv, arm), allocations in per_arm.items() if (f, lv) == (factor, level)},
        }
        for (factor, level), count in sorted(totals.items())
    ]
