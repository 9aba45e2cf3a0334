import functools
from collections.abc import Collection

from django.db import connection
from django.db.models import Q, QuerySet

from enrollment.models import Consent, Participant, Screening, Withdrawal
from trialsite import access
from trialsite.access import Capability
from trialsite.models import Site, Trial


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


# The models read together by participant_locked_for_randomization, each under its alias, in
# the order of the joins; the withdrawal is a LEFT JOIN (its columns are NULL when there is none).
_LOCKED_FOR_RANDOMIZATION = (
    ("participant", Participant),
    ("screening", Screening),
    ("site", Site),
    ("trial", Trial),
    ("withdrawal", Withdrawal),
)


@functools.cache
def _locked_for_randomization_statement(
    within_sites: bool = False,
) -> tuple[str, list[tuple[str, type, list[str], list[list]]]]:
    """The statement of `participant_locked_for_randomization`, written once per process from the
    models' own columns (so it follows every migration), with each column's converters from
    the database value to Python, as the ORM applies them. The ORM compiled this five-table
    select anew for every randomization, which took longer than the database took to run it."""
    quote = connection.ops.quote_name
    columns, layout = [], []
    for alias, model in _LOCKED_FOR_RANDOMIZATION:
        fields = list(model._meta.concrete_fields)
        converters = []
        for field in fields:
            column = field.get_col(alias)
            chain = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            converters.append([(converter, column) for converter in chain])
            columns.append(f"{quote(alias)}.{quote(field.column)}")
        layout.append((alias, model, [field.attname for field in fields], converters))
    table = {alias: quote(model._meta.db_table) for alias, model in _LOCKED_FOR_RANDOMIZATION}
    consent = Consent._meta
    statement = (
        f"SELECT {', '.join(columns)}, EXISTS(SELECT 1 FROM {quote(consent.db_table)} AS consent"
        f" WHERE consent.{quote(consent.get_field('screening').column)} = participant.screening_id"
        f" AND consent.{quote(consent.get_field('signed_on').column)} <= screening.screening_date)"
        f" FROM {table['participant']} AS participant"
        f" JOIN {table['screening']} AS screening ON screening.id = participant.screening_id"
        f" JOIN {table['site']} AS site ON site.id = participant.site_id"
        f" JOIN {table['trial']} AS trial ON trial.id = site.trial_id"
        f" LEFT JOIN {table['withdrawal']} AS withdrawal ON withdrawal.participant_id = participant.screening_id"
        " WHERE participant.screening_id = %s"
        + (" AND participant.site_id = ANY(%s)" if within_sites else "")
        + " FOR UPDATE OF screening, participant"
    )
    return statement, layout


def participant_locked_for_randomization(pk: int, *, site_ids: Collection[int] | None = None) -> Participant | None:
    """The participant with everything randomization decides on, in one statement: the
    screening and participant rows locked (the screening first, as
    `enrollment.services.lock_screening_and_participant` locks them, so the two cannot
    deadlock), the site and trial, the withdrawal if any, and `consented` (a consent signed on
    or before the screening date). None when the screening has no participant, or, given
    `site_ids`, when the participant is at none of those sites (a caller's access check, made
    by the same statement)."""
    statement, layout = _locked_for_randomization_statement(within_sites=site_ids is not None)
    with connection.cursor() as cursor:
        cursor.execute(statement, [pk] if site_ids is None else [pk, list(site_ids)])
        row = cursor.fetchone()
    if row is None:
        return None
    made, position = {}, 0
    for alias, model, names, converters in layout:
        values = list(row[position : position + len(names)])
        position += len(names)
        for index, chain in enumerate(converters):
            for converter, column in chain:
                values[index] = converter(values[index], column, connection)
        made[alias] = model.from_db(connection.alias, names, values)
    participant, screening, site = made["participant"], made["screening"], made["site"]
    withdrawal = made["withdrawal"] if made["withdrawal"].pk is not None else None
    Participant._meta.get_field("screening").set_cached_value(participant, screening)
    Participant._meta.get_field("site").set_cached_value(participant, site)
    Site._meta.get_field("trial").set_cached_value(site, made["trial"])
    # hasattr(participant, "withdrawal") is then answered without a query, either way.
    Participant._meta.get_field("withdrawal").set_cached_value(participant, withdrawal)
    # Code reading screening.participant sees the locked row.
    Screening._meta.get_field("participant").set_cached_value(screening, participant)
    participant.consented = row[position]
    return participant
