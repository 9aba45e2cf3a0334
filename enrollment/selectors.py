from django.db.models import Q, QuerySet

from enrollment.models import Participant, Screening
from trialsite import access
from trialsite.access import Capability


def participants_for(user, *, search: str | None = None, status: str | None = None) -> QuerySet[Participant]:
    participants = access.scope(Participant.objects.all(), user, Capability.VIEW_PARTICIPANTS)
    if search:
        participants = participants.filter(
            Q(screening_number__icontains=search)
            | Q(randomization_number__icontains=search)
            | Q(screening__initials__iexact=search)
        )
    if status:
        participants = participants.filter(status=status)
    return participants.select_related("screening", "site").order_by("screening_number")


def awaiting_signature(user) -> QuerySet[Participant]:
    """Eligible, enrolled participants at the user's sign-off sites whose eligibility nobody has
    signed yet: the PI's "waiting for my signature" list, oldest screening first."""
    return (
        access.scope(Participant.objects.all(), user, Capability.SIGN_ELIGIBILITY)
        .filter(status="enrolled", screening__outcome="eligible", eligibility_signature__isnull=True)
        .select_related("screening", "site")
        .order_by("screening__screening_date", "screening_number")
    )


def screenings_for(user, *, outcome: str | None = None) -> QuerySet[Screening]:
    screenings = access.scope(Screening.objects.all(), user, Capability.VIEW_PARTICIPANTS)
    if outcome:
        screenings = screenings.filter(outcome=outcome)
    return screenings.select_related("site", "participant").order_by("-screening_date", "-id")
