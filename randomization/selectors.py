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
