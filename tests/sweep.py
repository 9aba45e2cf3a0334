"""What the sweeps over every route share: the routes, found from the URL resolver, a record for
each kind of id a route takes, and row counts of every audited table."""

from __future__ import annotations

import re
from decimal import Decimal

from django.urls import URLResolver, get_resolver
from django.utils import timezone

from dosing import services as dosing_services
from randomization import services as randomization_services
from tests import dosing_factories, factories
from trialsite.audit import audit_context, audited_models
from trialsite.models import AuditEvent

# The URL prefix of a route decides which record its <pk> names.
RECORD_FOR_PREFIX = [
    ("randomization/lists/", "randomization_list"),
    ("supply/kits/", "quarantined_kit"),
    ("pharmacy/kits/", "kit"),
    ("pharmacy/shipments/", "shipment"),
    ("kits/", "kit"),
    ("shipments/", "shipment"),
    ("visits/", "visit"),
    ("participants/", "participant"),
    ("screenings/", "screening"),
    ("screening/", "screening"),
    ("exports/", "export"),
    ("reports/exports/", "export"),
    ("sites/", "site"),
    ("tokens/", "api_token"),
]
# Writes that are not trial data: logging in and out, the language, the second factor.
NOT_TRIAL_WRITES = ("accounts/", "i18n/", "admin/", "api/v1/schema/", "api/v1/docs/")


def make_world(trial, site, cast) -> dict:
    """A site with one record of every kind a route can name, and a user holding every role."""
    everyone = factories.make_user_with_every_role(site, username="everyone")
    today = timezone.localdate(timezone=site.zone)
    participant = dosing_factories.randomized_participant(site, arm_code="TOC", by=cast.coordinator, day0=today)
    # Every content of each type: a site that cannot serve every content assigns nothing.
    for kit_type in ("INF", "TAB"):
        for content in ("active", "placebo"):
            dosing_factories.make_kit(kit_type=kit_type, content=content, site=site)
    visit = participant.visits.get(code="C1")
    dosing_services.visit_record(
        visit=visit,
        actual_date=today,
        recorded_by=cast.coordinator,
        weight_kg=Decimal("70.0"),
        neutrophils=2500,
        platelets=180000,
        alt_uln=Decimal("0.8"),
        ast_uln=Decimal("0.9"),
    )
    quarantined = dosing_factories.make_kit(kit_type="TAB", content="active", site=site, status="quarantined")
    from dosing.models import Shipment
    from reports.models import Export

    with audit_context(actor=cast.supply_manager, reason="sweep shipment"):
        shipment = Shipment.objects.create(site=site, shipped_by=cast.supply_manager)
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="sweep", slots_per_stratum=8, created_by=everyone, reason="bad-input sweep"
    )
    with audit_context(actor=everyone, reason="sweep export"):
        export = Export.objects.create(requested_by=everyone, kind="enrollment", format="csv", site=site)
    from trialsite import tokens

    # Eligible, not yet signed by the PI: its page carries the signature form.
    unsigned = factories.make_participant(site, by=cast.coordinator, signed=False)

    api_token, _key = tokens.token_issue(user=everyone, name="sweep", second_factor=True)
    from crf.services import form_save

    form_save(user=cast.coordinator, participant=participant, form_code="conmeds", values={"drug_name": "Paracetamol"})
    return {
        "api_token": api_token.pk,
        "unsigned_participant": unsigned.pk,
        "user": everyone,
        "participant": participant.pk,
        "screening": participant.pk,
        "visit": visit.pk,
        "kit": visit.kits.first().pk,
        "quarantined_kit": quarantined.pk,
        "shipment": shipment.pk,
        "randomization_list": randomization_list.pk,
        "export": export.pk,
        "site": site.pk,
    }


def row_counts() -> dict[str, int]:
    """Rows of trial data and of the audit trail. A refused password re-entry is itself audited
    (a security event, not trial data), so those rows are not counted as something written."""
    from trialsite.security_events import SECURITY_TABLES

    tables = {model._meta.label: model.objects for model in audited_models()}
    tables["audit"] = AuditEvent.objects.exclude(table_name__in=SECURITY_TABLES)
    return {label: rows.count() for label, rows in tables.items()}


def record_id(route: str, world) -> int:
    bare = route.removeprefix("api/v1/")
    for prefix, key in RECORD_FOR_PREFIX:
        if bare.startswith(prefix):
            return world[key]
    raise AssertionError(f"no record known for {route}: add its prefix to RECORD_FOR_PREFIX")


# The case report forms' routes name a form of the protocol, a visit and a log entry.
CRF_PARTS = {"<str:form_code>/<str:visit_code>": "vitals/C1", "<str:form_code>": "conmeds", "<int:sequence>": "1"}


def fill(route: str, pk: int) -> str:
    for part, value in CRF_PARTS.items():
        route = route.replace(part, value)
    return "/" + re.sub(r"<int:pk>", str(pk), route)


def web_routes() -> list[str]:
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern)

    return [
        route
        for route in walk(get_resolver().url_patterns)
        if not route.startswith(("api/", *NOT_TRIAL_WRITES)) and route
    ]
