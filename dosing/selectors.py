"""Reads of visits, kits and stock, scoped by `trialsite.access`. Everything a blinded user
reads from here leaves out kit content: only `stock_by_site` (for supply managers, who may
view allocation) groups by it."""

from __future__ import annotations

import dataclasses
import datetime
from decimal import Decimal

from django.core.paginator import Page, Paginator
from django.db.models import Case, Count, OuterRef, Prefetch, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.http import Http404
from django.utils import timezone

from crf.models import FormRecord
from crf.values import typed
from dosing.dose import adherence
from dosing.kit_types import is_tablet_kit, kit_type_label, kit_types_given
from dosing.models import DoseRecord, Kit, KitContent, KitStatus, Shipment
from enrollment.models import Participant
from schedules.models import Visit, VisitKind, VisitStatus
from trialsite import access
from trialsite.access import Capability
from trialsite.models import Site, Trial
from trialsite.protocol_schema import LAB_ITEMS

# Fields a blinded user may read of a kit. Not `content`, and not the manufacturing `lot`, the
# true `expiry` or the shipment, which differ or group by content: the label's packaging lot and
# label expiry are shared by every content of a packaging lot.
BLINDED_KIT_FIELDS = (
    "id",
    "trial_id",
    "kit_number",
    "kit_type",
    "packaging_lot",
    "label_expiry",
    "status",
    "site_id",
    "participant_id",
    "visit_id",
    "assigned_at",
    "dispensed_at",
    "returned_on",
    "tablets_returned",
    "status_note",
)


def kit_types(trial) -> list[str]:
    return list(trial.protocol.kit_types)


def visits_for(user, participant: Participant) -> QuerySet[Visit]:
    """The participant's plan, with dose and assigned kits, in a constant number of queries."""
    access.get_for_user(Participant.objects.all(), user, Capability.VIEW_PARTICIPANTS, pk=participant.pk)
    return (
        Visit.objects.filter(participant=participant)
        .select_related("dose")
        .prefetch_related(Prefetch("kits", queryset=Kit.objects.only(*BLINDED_KIT_FIELDS).order_by("kit_type")))
        .order_by("sequence")
    )


def visit_for(user, pk, capability: str = Capability.VIEW_PARTICIPANTS) -> Visit:
    visits = Visit.objects.select_related("participant", "site__trial", "dose")
    return access.get_for_user(visits, user, capability, pk=pk)


def kits_blinded(queryset: QuerySet[Kit]) -> QuerySet[Kit]:
    """Never load the content column for blinded reads, so no template or serializer can leak it."""
    return queryset.only(*BLINDED_KIT_FIELDS)


def kit_for(user, pk, capability: str) -> Kit:
    kits = Kit.objects.select_related("site", "trial")
    if not access.can(user, Capability.VIEW_ALLOCATION):
        kits = kits.defer("content")
    return access.get_for_user(kits, user, capability, pk=pk)


# The two kit lists of the pharmacy queue are paged: a site far into the trial has hundreds of
# dispensed kits out, and the page must stay fast. Oldest first, so what is due comes first.
PHARMACY_PAGE_SIZE = 50


@dataclasses.dataclass
class PharmacyQueue:
    to_dispense: Page
    awaiting_return: Page
    awaiting_kits: list[Visit]
    shipments: list[Shipment]
    quarantined: list[Kit]


_QUEUE_JOINED_FIELDS = (
    "participant__screening_number",
    "participant__randomization_number",
    "visit__code",
    "visit__actual_date",
    "visit__dose__visit",
    "visit__dose__dose_mg",
    "visit__dose__concentrate_ml",
    "visit__dose__diluted_volume_ml",
    "visit__dose__vial_plan",
)


def pharmacy_queue(user, *, dispense_page=None, return_page=None) -> PharmacyQueue:
    """What the pharmacist has to do at their sites: kits to dispense (assigned, oldest first),
    dispensed kits to collect back, dosing visits still waiting for a kit, shipments to receive.
    Kit numbers only; content is never loaded. The two kit lists are pages of
    PHARMACY_PAGE_SIZE (an out-of-range page number gives the last page)."""
    site_ids = access.site_ids_with(user, Capability.DISPENSE)
    # Not the trial with each kit: every row would carry (and decode, and digest to find its
    # parsed protocol) the whole protocol definition. The trials once, shared by their kits.
    trials = {trial.pk: trial for trial in Trial.objects.filter(sites__in=site_ids).distinct()}
    # Of the joined rows, what a queue row shows (the participant's label, the visit's code and
    # date, the infusion's preparation): their other columns were most of what each page query
    # compiled, fetched and set on its fifty rows.
    kits = (
        kits_blinded(Kit.objects.filter(site_id__in=site_ids))
        .select_related("participant", "visit__dose")
        .only(*BLINDED_KIT_FIELDS, *_QUEUE_JOINED_FIELDS)
    )
    # Both lists' sizes in one count, given to their paginators.
    sizes = Kit.objects.filter(site_id__in=site_ids).aggregate(
        assigned=Count("id", filter=Q(status=KitStatus.ASSIGNED)),
        dispensed=Count("id", filter=Q(status=KitStatus.DISPENSED)),
    )
    pages = []
    for status, ordering, number in (
        (KitStatus.ASSIGNED, ("assigned_at", "visit_id", "kit_type", "id"), dispense_page),
        (KitStatus.DISPENSED, ("dispensed_at", "kit_type", "id"), return_page),
    ):
        paginator = Paginator(kits.filter(status=status).order_by(*ordering), PHARMACY_PAGE_SIZE)
        paginator.count = sizes[status]
        pages.append(paginator.get_page(number))
    to_dispense, awaiting_return = pages
    # Kit numbers only: no participant, visit or dose joined in.
    quarantined = list(
        kits_blinded(Kit.objects.filter(site_id__in=site_ids, status=KitStatus.QUARANTINED)).order_by("kit_number")
    )
    for page in (to_dispense, awaiting_return):
        page.object_list = list(page.object_list)
    for kit in [*to_dispense, *awaiting_return, *quarantined]:
        kit.trial = trials[kit.trial_id]
    awaiting_kits = _visits_awaiting_kits(site_ids, trials=list(trials.values()))
    shipments = list(
        Shipment.objects.filter(site_id__in=site_ids, received_at__isnull=True)
        .select_related("site")
        .annotate(kit_count=Count("kits"))
        .order_by("shipped_at")
    )
    return PharmacyQueue(to_dispense, awaiting_return, awaiting_kits, shipments, quarantined)


@dataclasses.dataclass
class StockLine:
    site: Site
    kit_type: str
    content: str
    available: int
    assigned: int
    quarantined: int
    expiring_soon: int
    low: bool
    # Shipped and not yet received: on the way to the site, counted there once the pharmacist
    # marks the shipment received.
    in_transit: int = 0

    @property
    def kit_type_label(self) -> str:
        return kit_type_label(self.site.trial, self.kit_type)

    @property
    def content_label(self) -> str:
        return _label(KitContent, self.content)


def _label(choices, value: str) -> str:
    return str(choices(value).label) if value in choices.values else value


def require_supply(user) -> None:
    """Supply pages and endpoints show content: MANAGE_SUPPLY and VIEW_ALLOCATION are both needed."""
    if not (access.can(user, Capability.MANAGE_SUPPLY) and access.can(user, Capability.VIEW_ALLOCATION)):
        raise Http404("Not found")


def supply_sites(user) -> QuerySet[Site]:
    """Sites where the user may manage supply and see content."""
    return access.sites_for(user, Capability.MANAGE_SUPPLY).filter(
        pk__in=access.site_ids_with(user, Capability.VIEW_ALLOCATION)
    )


def stock_by_site(user, *, today: datetime.date | None = None) -> list[StockLine]:
    """Unblinded stock per site, type and content, for supply managers only (the caller checks
    MANAGE_SUPPLY and VIEW_ALLOCATION at each site; this scopes to sites with both)."""
    today = today or timezone.now().date()
    site_ids = access.site_ids_with(user, Capability.MANAGE_SUPPLY) & access.site_ids_with(
        user, Capability.VIEW_ALLOCATION
    )
    sites = list(Site.objects.filter(pk__in=site_ids).select_related("trial").order_by("code"))
    # Not in the protocol file today: `[kits].expiry_warning_days` may set it, 60 days otherwise.
    kit_rules = sites[0].trial.protocol.kits if sites else None
    warning_days = kit_rules.expiry_warning_days if kit_rules else 60
    soon = today + datetime.timedelta(days=warning_days)
    counts = (
        Kit.objects.filter(site_id__in=site_ids)
        .values("site_id", "kit_type", "content")
        .annotate(
            available=Count("id", filter=Q(status=KitStatus.AT_SITE)),
            assigned=Count("id", filter=Q(status=KitStatus.ASSIGNED)),
            quarantined=Count("id", filter=Q(status=KitStatus.QUARANTINED)),
            expiring_soon=Count("id", filter=Q(status=KitStatus.AT_SITE, expiry__lte=soon)),
            in_transit=Count("id", filter=Q(status=KitStatus.SHIPPED)),
        )
    )
    by_key = {(row["site_id"], row["kit_type"], row["content"]): row for row in counts}
    lines = []
    for site in sites:
        kits = site.trial.protocol.kits
        threshold = kits.low_stock_threshold if kits else 0
        for kit_type in site.trial.protocol.kit_types:
            for content in ("active", "placebo"):
                row = by_key.get((site.pk, kit_type, content), {})
                available = row.get("available", 0)
                lines.append(
                    StockLine(
                        site=site,
                        kit_type=kit_type,
                        content=content,
                        available=available,
                        assigned=row.get("assigned", 0),
                        quarantined=row.get("quarantined", 0),
                        expiring_soon=row.get("expiring_soon", 0),
                        low=available < threshold,
                        in_transit=row.get("in_transit", 0),
                    )
                )
    return lines


def depot_stock(trial) -> list[dict]:
    rows = list(
        Kit.objects.filter(trial=trial, site__isnull=True, status=KitStatus.IN_DEPOT)
        .values("kit_type", "content")
        .annotate(count=Count("id"))
        .order_by("kit_type", "content")
    )
    for row in rows:
        row["kit_type_label"], row["content_label"] = (
            kit_type_label(trial, row["kit_type"]),
            _label(KitContent, row["content"]),
        )
    return rows


def quarantined_kits(user) -> QuerySet[Kit]:
    return access.scope(
        Kit.objects.filter(status=KitStatus.QUARANTINED).select_related("site", "trial"), user, Capability.MANAGE_SUPPLY
    ).order_by("kit_number")


@dataclasses.dataclass
class ParticipantAccountability:
    participant: Participant
    dispensed: int
    returned: int
    tablets_dispensed: int
    tablets_returned: int
    tablets_taken: int
    days_elapsed: int
    adherence: Decimal | None


def kit_accountability(user) -> QuerySet[Kit]:
    """Every kit given to a participant at the user's sites, blinded (no content)."""
    sites = access.site_ids_with(user, Capability.DISPENSE) | access.site_ids_with(user, Capability.MANAGE_SUPPLY)
    return (
        kits_blinded(Kit.objects.filter(site_id__in=sites, participant__isnull=False))
        .select_related("participant", "visit", "site__trial")
        .order_by("participant__randomization_number", "visit__sequence", "kit_type")
    )


def _visits_awaiting_kits(site_ids, *, trials: list[Trial]) -> list[Visit]:
    """Dosing visits (given, or an infusion held while the tablets go on) recorded while a kit was
    missing: fewer kits than the visit gives, per trial by its kit types. In an open-label trial
    an arm may get fewer types (observation none), so there the arm decides."""
    from dosing.services import needed_kits

    awaiting: list[Visit] = []
    for trial in trials:
        every = len(kit_types_given(trial, infusion_held=False))
        held = len(kit_types_given(trial, infusion_held=True))
        if not every:
            continue
        # Each recorded visit's kits counted by a lookup of its own (the kit's visit index),
        # not by grouping every recorded visit of the site joined to its kits, participant and
        # dose: the grouped query, and the two it was nested in, cost more to build and plan
        # than to run. A visit gives the held count when its infusion was held, all its types
        # otherwise (given, or recorded without a dose); a stopped one gives none.
        kit_count = Coalesce(
            Subquery(
                Kit.objects.filter(
                    visit=OuterRef("pk"), status__in=[KitStatus.ASSIGNED, KitStatus.DISPENSED, KitStatus.RETURNED]
                )
                .order_by()
                .values("visit")
                .annotate(count=Count("id"))
                .values("count")
            ),
            0,
        )
        visits = list(
            Visit.objects.filter(
                site_id__in=site_ids,
                site__trial=trial,
                kind=VisitKind.DOSING,
                status=VisitStatus.COMPLETED,
            )
            .exclude(dose__decision="stop")
            .annotate(kit_count=kit_count)
            .filter(kit_count__lt=Case(When(dose__decision="hold", then=Value(held)), default=Value(every)))
            .select_related("participant", "dose", "site")
            .order_by("actual_date", "id")
        )
        for visit in visits:
            # The trial read once (see pharmacy_queue), not its definition with every visit.
            visit.site.trial = trial
        if trial.protocol.blinded:
            awaiting += visits
        else:
            awaiting += [visit for visit in visits if len(needed_kits(visit)) > visit.kit_count]
    return sorted(awaiting, key=lambda visit: (visit.actual_date, visit.pk))


def participant_accountability(user) -> list[ParticipantAccountability]:
    """Per participant: kits dispensed and returned; tablets dispensed (every dispensed tablet
    kit, returned or not); tablets returned and taken, days and adherence (tablets taken per day
    between dispensing and return) over returned tablet kits only."""
    rows: dict[int, ParticipantAccountability] = {}
    kits = list(kit_accountability(user).filter(status__in=[KitStatus.DISPENSED, KitStatus.RETURNED]))
    for kit in kits:
        per_kit = kit.site.trial.protocol.dosing.tablet.tablets_per_kit
        row = rows.setdefault(kit.participant_id, ParticipantAccountability(kit.participant, 0, 0, 0, 0, 0, 0, None))
        row.dispensed += 1
        if kit.status == KitStatus.RETURNED:
            row.returned += 1
        tablets = is_tablet_kit(kit.site.trial, kit.kit_type)
        if tablets:
            # Every tablet handed out counts as dispensed, returned or not; what was taken and
            # adherence can only be known from the kits that came back and were counted.
            row.tablets_dispensed += per_kit
        if tablets and kit.status == KitStatus.RETURNED and kit.tablets_returned is not None:
            dispensed_on = timezone.localtime(kit.dispensed_at, kit.site.zone).date()
            row.tablets_returned += kit.tablets_returned
            row.tablets_taken += per_kit - kit.tablets_returned
            row.days_elapsed += (kit.returned_on - dispensed_on).days
    for row in rows.values():
        row.adherence = adherence(tablets_taken=row.tablets_taken, days_elapsed=row.days_elapsed)
    return sorted(rows.values(), key=lambda row: row.participant.label)


def kit_adherence(kit: Kit) -> Decimal | None:
    if not is_tablet_kit(kit.site.trial, kit.kit_type) or kit.tablets_returned is None or kit.dispensed_at is None:
        return None
    per_kit = kit.site.trial.protocol.dosing.tablet.tablets_per_kit
    days = (kit.returned_on - timezone.localtime(kit.dispensed_at, kit.site.zone).date()).days
    return adherence(tablets_taken=per_kit - kit.tablets_returned, days_elapsed=days)


def doses_for(participant: Participant) -> QuerySet[DoseRecord]:
    return DoseRecord.objects.filter(participant=participant).select_related("visit").order_by("visit__sequence")


# --- The dose's inputs on the case report forms ----------------------------------------------


def dose_input_items(protocol) -> dict[str, tuple[str, str]]:
    """visit_record's field -> (form, item) the dose reads it from, for each the protocol names
    (`dosing.infusion.weight_item`, `dosing.safety.labs_form`); empty when it names none."""
    dosing = protocol.dosing
    if dosing.infusion is None:
        return {}
    items = {}
    if dosing.infusion.weight_item:
        form, _dot, item = dosing.infusion.weight_item.partition(".")
        items["weight_kg"] = (form, item)
    if dosing.safety.labs_form:
        items.update({name: (dosing.safety.labs_form, name) for name in LAB_ITEMS})
    return items


def dose_inputs_on_forms(visit: Visit) -> dict:
    """The weight and labs saved on the forms of this visit, by visit_record's field names (None
    when not saved), for the inputs the protocol puts on forms. Read as `crf.selectors.value`
    reads one item (the latest record of each form at the visit, typed by the protocol), but
    every item of every form in one query."""
    protocol = visit.site.trial.protocol
    items = dose_input_items(protocol)
    if not items:
        return {}
    specs = {}
    for name, (form_code, item_code) in items.items():
        form = protocol.form(form_code)
        item = form.item(item_code) if form else None
        if item is None:
            raise LookupError(f"the protocol has no item {form_code}.{item_code}")
        specs[name] = item
    # A LEFT JOIN from the records: a record with none of the items still hides older ones.
    rows = (
        FormRecord.objects.filter(
            participant_id=visit.participant_id,
            visit_code=visit.code,
            form_code__in={form_code for form_code, _item in items.values()},
        )
        .order_by("form_code", "-sequence")
        .values_list("form_code", "sequence", "values__item_code", "values__value", "values__unblinded_value")
    )
    latest: dict[str, int] = {}
    saved: dict[tuple[str, str], tuple] = {}
    for form_code, sequence, item_code, value, unblinded_value in rows:
        if latest.setdefault(form_code, sequence) == sequence and item_code is not None:
            saved[(form_code, item_code)] = (value, unblinded_value)
    read = {}
    for name, (form_code, item_code) in items.items():
        item = specs[name]
        value, unblinded_value = saved.get((form_code, item_code), (None, None))
        read[name] = typed(item, unblinded_value if item.unblinded_only else value)
    return read
