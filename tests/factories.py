"""Test data built through the same code paths as production where one exists, and plainly
through the ORM (inside an audit context) where the capability under test is not enrollment."""

from __future__ import annotations

import datetime
import itertools

from django.contrib.auth import get_user_model

from enrollment.models import Answer, Consent, EligibilityAnswer, Outcome, Participant, Screening
from trialsite.audit import audit_context
from trialsite.models import Role, Site, StaffRole, Trial

PASSWORD = "correct-horse-battery-staple"
_numbers = itertools.count(1)


def make_user(role: str | None = None, site: Site | None = None, *, username: str | None = None, **fields):
    username = username or f"{role or 'user'}-{next(_numbers)}"
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **fields)
    if role is not None:
        with audit_context(reason="test cast"):
            StaffRole.objects.create(user=user, site=site, role=role)
    return user


def make_user_with_every_role(site: Site, *, username: str):
    """One user holding every role at the site, so no request of theirs stops at "you may not"
    before the code that reads its input."""
    user = make_user(None, None, username=username)
    with audit_context(reason="test cast: every role"):
        StaffRole.objects.bulk_create(StaffRole(user=user, site=site, role=role) for role in Role)
    return user


def make_site(trial: Trial, code: str, *, time_zone: str = "Asia/Shanghai") -> Site:
    with audit_context(reason="test site"):
        return Site.objects.create(trial=trial, code=code, name=f"Hospital {code}", time_zone=time_zone)


def make_screening(
    site: Site,
    *,
    by,
    date_of_birth=datetime.date(1970, 6, 1),
    screening_date=datetime.date(2026, 11, 2),
    eligible: bool = True,
    record_number: str | None = None,
    stratification=None,
) -> Screening:
    """A complete screening, written directly (enrollment's own tests go through its services)."""
    with audit_context(actor=by, reason="test screening"):
        screening = Screening.objects.create(
            site=site,
            initials="TS",
            date_of_birth=date_of_birth,
            sex="F",
            hospital_record_number=record_number or f"HRN{next(_numbers):06d}",
            screening_date=screening_date,
            outcome=Outcome.ELIGIBLE if eligible else Outcome.INELIGIBLE,
            reasons=[] if eligible else [{"code": "EX1", "text": "Liver disease"}],
            stratification=stratification or {},
            screened_by=by,
            protocol_version_id=site.trial.current_version_id,
        )
        Consent.objects.create(screening=screening, site=site, version="1.0", signed_on=screening_date, obtained_by=by)
        for criterion in site.trial.protocol.eligibility.criteria:
            wanted = Answer.YES if criterion.kind == "inclusion" else Answer.NO
            EligibilityAnswer.objects.create(
                screening=screening, site=site, criterion_code=criterion.code, answer=wanted
            )
    return screening


def make_participant(site: Site, *, by, signed: bool = True, **screening_fields) -> Participant:
    """An enrolled participant; `signed` (the default for an eligible one) has the eligibility
    signed by the site's investigator through the enrollment service, as this trial's protocol
    requires before randomization."""
    screening = make_screening(site, by=by, **screening_fields)
    with audit_context(actor=by, reason="test enrollment"):
        site.last_screening_number += 1
        site.save(update_fields=["last_screening_number"])
        participant = Participant.objects.create(
            screening=screening, site=site, screening_number=f"S-{site.code}-{site.last_screening_number:04d}"
        )
    if signed and screening.outcome == Outcome.ELIGIBLE:
        sign_eligibility(participant)
    return participant


def site_investigator(site: Site):
    """The site's principal investigator: the first user with that role there, or a new one."""
    staff_role = StaffRole.objects.filter(site=site, role=Role.INVESTIGATOR).select_related("user").order_by("pk")
    found = staff_role.first()
    return found.user if found else make_user(Role.INVESTIGATOR, site, username=f"pi-{site.code.lower()}-factory")


def sign_eligibility(participant: Participant, *, signer=None) -> Participant:
    from enrollment.services import _eligibility_signature_record

    signature = _eligibility_signature_record(
        participant=participant, signer=signer or site_investigator(participant.site)
    )
    participant.eligibility_signature = signature
    return participant


def api_key(user) -> str:
    """A key for an API token of `user`, as made from a session verified by the second factor
    (so it also works for unblinded roles); trialsite/tokens.py decides who may make one."""
    from trialsite import tokens

    return tokens.token_issue(user=user, name="test", second_factor=True)[1]
