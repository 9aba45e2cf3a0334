from django.db.models import Exists, OuterRef, Q, QuerySet

from enrollment.models import Consent, Participant, Screening
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


def participant_locked_for_randomization(pk: int) -> Participant | None:
    """The participant with everything randomization decides on, in one statement: the
    screening and participant rows locked (the screening first, as
    `enrollment.services.lock_screening_and_participant` locks them, so the two cannot
    deadlock), the site and trial, the withdrawal if any, and `consented` (a consent signed on
    or before the screening date). None when the screening has no participant."""
    consented = Consent.objects.filter(
        screening_id=OuterRef("screening_id"), signed_on__lte=OuterRef("screening__screening_date")
    )
    participant = (
        Participant.objects.select_for_update(of=("screening", "self"))
        .select_related("screening", "site__trial", "withdrawal")
        .annotate(consented=Exists(consented))
        .filter(pk=pk)
        .first()
    )
    if participant is not None:
        # Code reading screening.participant sees the locked row.
        participant.screening.participant = participant
    return participant
