"""Randomization lists, allocation and emergency unblinding."""

from __future__ import annotations

import csv
import io

from django.core.mail import send_mail
from django.db import connection, transaction
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from enrollment.models import Outcome, Participant, ParticipantStatus
from enrollment.selectors import participant_locked_for_randomization
from randomization import generator, methods
from randomization.methods import StratumExhausted
from randomization.models import RandomizationList, Slot, Unblinding
from schedules.services import visit_schedule_create
from trialsite import access, two_factor
from trialsite.access import Capability
from trialsite.audit import audit_context
from trialsite.exceptions import Conflict, ReasonRequired, TrialRuleError
from trialsite.models import Arm, Role, Site, StaffRole, Trial
from trialsite.reauth import confirm_password
from trialsite.text import looks_like_formula, whole_number


# Lazy: a class attribute is evaluated at import, before any request's language is active.
class NotEligible(TrialRuleError):
    default_message = gettext_lazy("Only an eligible participant can be randomized.")


class NotConsented(TrialRuleError):
    default_message = gettext_lazy("The participant has no consent signed on or before the screening date.")


class ParticipantWithdrawn(TrialRuleError):
    default_message = gettext_lazy("The participant has withdrawn and cannot be randomized.")


class ParticipantDied(TrialRuleError):
    default_message = gettext_lazy("The participant has died and cannot be randomized.")


class EligibilityNotSigned(TrialRuleError):
    """The protocol asks for the principal investigator's eligibility signature first
    (`[randomization] require_eligibility_signature`)."""

    default_message = gettext_lazy(
        "The principal investigator has not signed this participant's eligibility yet; the protocol requires "
        "the signature before randomization."
    )

    def __init__(self, message=None, *, field: str | None = "eligibility_signature"):
        super().__init__(message, field=field)


class AlreadyRandomized(Conflict):
    default_message = gettext_lazy("The participant is already randomized.")


class NoActiveList(TrialRuleError):
    default_message = gettext_lazy("There is no locked randomization list to randomize from yet.")


class ListLocked(Conflict):
    default_message = gettext_lazy("This list is locked and cannot change.")


class InvalidList(TrialRuleError):
    pass


class ListOutdated(Conflict):
    pass


def _next_version(trial: Trial, reason: str) -> int:
    version = (
        RandomizationList.objects.filter(trial=trial).order_by("-version").values_list("version", flat=True).first()
        or 0
    ) + 1
    if version > 1 and not (reason or "").strip():
        raise ReasonRequired(_("A second list needs a recorded reason."))
    return version


def _store(*, trial, slots, source, seed, slots_per_stratum, created_by, reason, method=None) -> RandomizationList:
    arms = {arm.code: arm for arm in trial.arms.all()}
    sites = {site.code: site for site in trial.sites.all()}
    method = method or methods.method_for(trial, methods.BLOCKS)
    randomization_list = RandomizationList.objects.create(
        trial=trial,
        version=_next_version(trial, reason),
        source=source,
        method=method.name,
        seed=seed,
        block_sizes=list(trial.protocol.randomization.block_sizes),
        slots_per_stratum=slots_per_stratum,
        sha256=method.rules_digest(slots),
        reason=reason or "",
        created_by=created_by,
    )
    # COPY rather than bulk_create: a list of 100,000 slots per stratum took half a minute as
    # model instances and INSERT statements, most of it building them. The audit trigger is
    # statement-level and reads the transition table, so COPY is audited exactly as an INSERT.
    columns = ("randomization_list_id", "stratum", "site_id", "sequence", "block", "block_size", "arm_id")
    with connection.cursor() as django_cursor:
        with django_cursor.cursor.copy(f"COPY {Slot._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for slot in slots:
                copy.write_row(
                    (
                        randomization_list.pk,
                        slot.stratum,
                        sites[slot.stratum.split("|")[0]].pk,
                        slot.sequence,
                        slot.block,
                        slot.block_size,
                        arms[slot.arm].pk,
                    )
                )
    return randomization_list


def list_generate(
    *, trial: Trial, seed: str, slots_per_stratum: int | None = None, created_by, reason: str = ""
) -> RandomizationList:
    """A new list version by the protocol's method: permuted blocks generate every slot now from
    the seed; minimization keeps only the seed, and each allocation adds its slot when made
    (`slots_per_stratum` is then not used and recorded as 0)."""
    if not (seed or "").strip():
        raise InvalidList(_("A seed is required."), field="seed")
    method = methods.method_for(trial)
    if not method.pre_generates_slots:
        slots_per_stratum = 0
    elif slots_per_stratum is None or not 1 <= slots_per_stratum <= 100_000:
        raise InvalidList(_("Slots per stratum must be between 1 and 100,000."), field="slots_per_stratum")
    slots = method.plan(seed=seed, slots_per_stratum=slots_per_stratum)
    with audit_context(actor=created_by, reason=reason or "randomization list generated"):
        return _store(
            trial=trial,
            slots=slots,
            source=RandomizationList.Source.GENERATED,
            seed=seed,
            slots_per_stratum=slots_per_stratum,
            created_by=created_by,
            reason=reason,
            method=method,
        )


def list_import(*, trial: Trial, csv_text: str, created_by, reason: str = "") -> RandomizationList:
    """A statistician's CSV (stratum,sequence,block,block_size,arm); every problem names its line."""
    if not methods.method_for(trial).pre_generates_slots:
        raise InvalidList(
            _(
                "This trial randomizes by minimization: each arm is computed when its participant is "
                "randomized, so there is no list to import."
            ),
            field="csv_file",
        )
    arms = set(trial.arms.values_list("code", flat=True))
    strata = set(generator.protocol_strata(trial))
    # newline="" lets the csv module read \r, \r\n and quoted line breaks itself, as its
    # documentation asks; a line it still cannot parse is named like any other problem.
    reader = csv.reader(io.StringIO(csv_text, newline=""))
    try:
        return _list_import_rows(
            trial=trial, reader=reader, arms=arms, strata=strata, created_by=created_by, reason=reason
        )
    except csv.Error as error:
        raise InvalidList(
            _("Line %(line)d: %(problem)s.") % {"line": reader.line_num, "problem": error}, field="csv_file"
        ) from None


def _list_import_rows(*, trial, reader, arms, strata, created_by, reason) -> RandomizationList:
    header = next(reader, None)
    if [column.strip().lower() for column in header or []] != generator.CSV_HEADER:
        raise InvalidList(
            _("Line 1: the header must be %(header)s.") % {"header": ",".join(generator.CSV_HEADER)}, field="csv_file"
        )
    slots, seen = [], set()
    for line, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        problem = None
        if len(row) != 5:
            problem = _("expected 5 columns")
        elif any(looks_like_formula(cell.strip()) for cell in row):
            problem = _("a cell starts with a formula character")
        else:
            stratum, sequence, block, block_size, arm = (cell.strip() for cell in row)
            if stratum not in strata:
                problem = _("unknown stratum %(stratum)s") % {"stratum": stratum}
            elif arm not in arms:
                problem = _("unknown arm %(arm)s") % {"arm": arm}
            elif None in (whole_number(sequence), whole_number(block), whole_number(block_size)):
                problem = _("sequence, block and block size must be whole numbers")
            elif (stratum, int(sequence)) in seen:
                problem = _("duplicate sequence %(sequence)s in %(stratum)s") % {
                    "sequence": sequence,
                    "stratum": stratum,
                }
        if problem:
            raise InvalidList(_("Line %(line)d: %(problem)s.") % {"line": line, "problem": problem}, field="csv_file")
        seen.add((stratum, int(sequence)))
        slots.append(generator.PlannedSlot(stratum, int(sequence), int(block), int(block_size), arm))
    if not slots:
        raise InvalidList(_("The file has no slots."), field="csv_file")
    per_stratum: dict[str, list[int]] = {}
    for slot in slots:
        per_stratum.setdefault(slot.stratum, []).append(slot.sequence)
    for stratum, sequences in sorted(per_stratum.items()):
        missing = sorted(set(range(1, max(sequences) + 1)) - set(sequences))
        if missing:
            raise InvalidList(
                _("Stratum %(stratum)s: sequence %(sequence)d is missing (a gap).")
                % {"stratum": stratum, "sequence": missing[0]},
                field="csv_file",
            )
    with audit_context(actor=created_by, reason=reason or "randomization list imported"):
        return _store(
            trial=trial,
            slots=slots,
            source=RandomizationList.Source.IMPORTED,
            seed="",
            slots_per_stratum=max(len(values) for values in per_stratum.values()),
            created_by=created_by,
            reason=reason,
        )


def list_lock(*, randomization_list: RandomizationList, locked_by, password: str, request=None) -> RandomizationList:
    """Lock the list (password again, and the two-factor code for a user who has one) and make
    it the one slots are taken from."""
    two_factor.require_verified(user=locked_by, request=request)
    confirm_password(user=locked_by, password=password, request=request)
    with audit_context(actor=locked_by, reason="randomization list locked"):
        randomization_list = RandomizationList.objects.select_for_update().get(pk=randomization_list.pk)
        if randomization_list.locked_at:
            raise ListLocked()
        problem = methods.method_for(randomization_list.trial, randomization_list.method).outdated(randomization_list)
        if problem is not None:
            raise ListOutdated(
                _(
                    "This list was made for other arms or ratios than the protocol in force (%(problem)s); "
                    "generate or import a new version."
                )
                % {"problem": problem}
            )
        RandomizationList.objects.filter(trial=randomization_list.trial, is_active=True).update(is_active=False)
        randomization_list.locked_at = timezone.now()
        randomization_list.locked_by = locked_by
        randomization_list.is_active = True
        randomization_list.save(update_fields=["locked_at", "locked_by", "is_active"])
        return randomization_list


def signature_required(trial: Trial) -> bool:
    """Whether this trial's protocol wants the PI's eligibility signature before randomization."""
    return trial.protocol.randomization.require_eligibility_signature


def _check_randomizable(participant: Participant) -> None:
    if participant.status == ParticipantStatus.WITHDRAWN or hasattr(participant, "withdrawal"):
        raise ParticipantWithdrawn()
    if participant.status == ParticipantStatus.DIED:
        raise ParticipantDied()
    if participant.randomization_number or participant.status != ParticipantStatus.ENROLLED:
        raise AlreadyRandomized()
    screening = participant.screening
    if screening.outcome != Outcome.ELIGIBLE:
        raise NotEligible()
    # `consented` comes with the locked participant (enrollment.selectors); asked here otherwise.
    consented = getattr(participant, "consented", None)
    if consented is None:
        consented = screening.consents.filter(signed_on__lte=screening.screening_date).exists()
    if not consented:
        raise NotConsented()
    if signature_required(participant.site.trial) and not participant.eligibility_signature_id:
        raise EligibilityNotSigned()


def _alert_exhausted(site: Site, stratum: str) -> None:
    recipients = [user.email for user in access.users_with(Capability.MANAGE_RANDOMIZATION, site) if user.email]
    if recipients:
        send_mail(
            subject=f"Randomization stratum {stratum} has no free slot",
            message=(
                f"A participant at {site.code} could not be randomized: stratum {stratum} of the active "
                "randomization list is used up. Generate or import a new list version."
            ),
            from_email=None,
            recipient_list=recipients,
        )


def participant_randomize(*, participant: Participant, randomized_by, request=None) -> Participant:
    """Allocate the next free slot of the participant's stratum, exactly once.

    The screening and participant rows are locked first (no double randomization, and no
    correction of the eligibility it rests on meanwhile), then a transaction-scoped
    advisory lock per stratum serializes allocations within one stratum, so slots are taken
    strictly in sequence order even when a transaction rolls back; different strata proceed in
    parallel. The slot row is locked too, and unique constraints back it all up. A minimization
    list serializes every allocation of the trial on the list's row instead (each depends on
    all the earlier ones) and creates the filled slot (randomization/methods.py)."""
    return _randomize(pk=participant.pk, randomized_by=randomized_by)


def participant_randomize_reachable(*, pk: int, randomized_by, request=None) -> Participant:
    """participant_randomize of the participant `pk` as `randomized_by` reaches it with the
    RANDOMIZE capability: Http404 alike for a participant that does not exist and for one at a
    site where they may not randomize. The access check is a condition of the locked read, not
    a read of its own: the API's randomize request sends one statement fewer (issue 20)."""
    return _randomize(
        pk=pk, randomized_by=randomized_by, site_ids=access.site_ids_with(randomized_by, Capability.RANDOMIZE)
    )


def _randomize(*, pk: int, randomized_by, site_ids: set[int] | None = None) -> Participant:
    try:
        return _allocate(pk=pk, randomized_by=randomized_by, site_ids=site_ids)
    except StratumExhausted as exhausted:
        # The refused transaction is rolled back; the alert goes out regardless.
        _alert_exhausted(exhausted.site, exhausted.stratum)
        raise


def _allocate(*, pk: int, randomized_by, site_ids: set[int] | None = None) -> Participant:
    """Only what must commit with the allocation, in a constant number of statements: the locked
    participant (with its screening, withdrawal and consent), the visit plan, the active list with
    its lock, the slot, the number and the participant. Its reminders are planned after commit
    (dosing.reminders.services.reminders_plan_pending). Given `site_ids`, a participant at none
    of them is not found (Http404)."""
    with audit_context(actor=randomized_by, reason="Randomized"):
        # The screening is locked too (first, as a correction locks them): the verdict read
        # here stays the verdict until the allocation is committed.
        participant = participant_locked_for_randomization(pk, site_ids=site_ids)
        if participant is None:
            if site_ids is not None:
                raise Http404("Not found")
            raise NotEligible()
        _check_randomizable(participant)
        trial = participant.site.trial
        stratum = generator.stratum_of(participant)
        # The visit plan first: it depends on the date, not on the arm, and its INSERT (with its
        # audit rows) is the longest statement. Written before the stratum's lock and the site's
        # counter are taken, it is outside the section every randomization of the stratum waits
        # for, which is then only the slot, the number and the commit (bench/http_bench.py).
        # Day 0 is the day the randomization was asked for (the slot's time comes after the
        # stratum's lock, to keep allocation order time order).
        visits = visit_schedule_create(
            participant=participant,
            day0=timezone.localdate(timezone.now(), timezone=participant.site.zone),
            reminders_after_commit=True,
        )
        slot = None
        # Twice at most: a minimization allocation that finds its list retired by a newer
        # version (locked meanwhile) looks up the active list again.
        for _attempt in range(2):
            active = methods.active_list_for_allocation(trial, stratum)
            if active is None:
                raise NoActiveList()
            method = methods.method_for(trial, active.method)
            try:
                slot = method.allocate(active=active, participant=participant, stratum=stratum)
            except StratumExhausted as exhausted:
                # Whom to alert, known only here when the caller gave the participant's id alone.
                exhausted.site = participant.site
                raise
            if slot is not None:
                break
        if slot is None:
            raise NoActiveList()
        now = slot.allocated_at
        # The site's next number and the participant's update in one statement (the site row is
        # locked by its UPDATE until commit, so numbers are given in commit order, never twice).
        with connection.cursor() as cursor:
            cursor.execute(
                "WITH numbered AS (UPDATE trialsite_site SET last_randomization_number = last_randomization_number + 1"
                " WHERE id = %s RETURNING last_randomization_number AS number)"
                " UPDATE enrollment_participant SET status = %s, randomized_at = %s,"
                " randomization_number = %s || '-' || lpad(numbered.number::text,"
                " greatest(4, length(numbered.number::text)), '0')"
                " FROM numbered WHERE enrollment_participant.screening_id = %s"
                " RETURNING enrollment_participant.randomization_number",
                [participant.site_id, ParticipantStatus.RANDOMIZED, now, participant.site.code, participant.pk],
            )
            participant.randomization_number = cursor.fetchone()[0]
        participant.randomized_at = now
        participant.status = ParticipantStatus.RANDOMIZED
        # What the API answers with, known here without counting the rows just written.
        participant.planned_visits = len(visits)
    return participant


class NotASusar(TrialRuleError):
    status_code = 403
    default_message = gettext_lazy(
        "The sponsor's safety officer may break the blind only of a participant with a SUSAR: a serious event "
        "the sponsor assessed as related and unexpected. Assess the event first."
    )


def require_unblinding_allowed(user, participant: Participant) -> None:
    """The emergency unblinding is the site's (the investigator's, for treating the participant)
    at any time; the sponsor's safety officer holds it only for a SUSAR's participant, to write
    the expedited report, so a sponsor role cannot open the arms of the trial one by one."""
    site = participant.site
    granted_by = {
        role
        for role in StaffRole.objects.filter(user=user, site=site).values_list("role", flat=True)
        if Capability.EMERGENCY_UNBLIND in access.role_capabilities(site, role)
    }
    if granted_by - {Role.SPONSOR_SAFETY}:
        return
    # Imported here: safety's services import the dosing and enrollment services, which this module feeds.
    from safety.services import has_susar

    if not has_susar(participant):
        raise NotASusar()


def participant_unblind(*, participant: Participant, unblinded_by, password: str, reason: str, request=None) -> Arm:
    """Break the blind for one participant, for this user only; the sponsor is told (not the arm)."""
    if not access.can(unblinded_by, Capability.EMERGENCY_UNBLIND, participant.site_id):
        raise Http404("Not found")
    require_unblinding_allowed(unblinded_by, participant)
    if not (reason or "").strip():
        raise ReasonRequired(_("Give the medical reason for breaking the blind."))
    two_factor.require_verified(user=unblinded_by, request=request)
    confirm_password(user=unblinded_by, password=password, request=request)
    participant = Participant.objects.select_related("site__trial").get(pk=participant.pk)
    slot = Slot.objects.filter(participant=participant).select_related("arm").first()
    if slot is None:
        raise NotEligible(_("Only a randomized participant has an allocation to reveal."))
    with audit_context(actor=unblinded_by, reason=f"Emergency unblinding: {reason}"):
        unblinding = Unblinding.objects.create(
            participant=participant, site=participant.site, unblinded_by=unblinded_by, reason=reason
        )
        Participant.objects.filter(pk=participant.pk).update(unblinded_at=unblinding.unblinded_at)
        trial = participant.site.trial

        def notify():
            send_mail(
                subject=f"{trial.nct_id}: emergency unblinding of participant {participant.randomization_number}",
                message=(
                    f"The blind was broken for participant {participant.randomization_number} at "
                    f"{participant.site.code} by {unblinded_by.get_full_name() or unblinded_by.get_username()} "
                    f"on {unblinding.unblinded_at:%Y-%m-%d %H:%M} UTC.\nReason: {reason}\n"
                    "The allocation is shown only to the person who broke the blind."
                ),
                from_email=None,
                recipient_list=[trial.sponsor_contact_email],
            )
            Unblinding.objects.filter(pk=unblinding.pk).update(sponsor_notified_at=timezone.now())

        transaction.on_commit(notify)
    return slot.arm
